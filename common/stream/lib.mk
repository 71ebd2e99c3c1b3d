stream_DEPS := wire core
stream_LDLIBS := -lzmq -lprotobuf-c

wire_DEPS := core
wire_LDLIBS := -lzmq -lprotobuf-c

http_DEPS := core
http_LDLIBS := -lmicrohttpd -lcjson

store_DEPS := core
store_LDLIBS := -lrocksdb

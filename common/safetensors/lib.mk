safetensors_DEPS := core
safetensors_LDLIBS := -lcjson

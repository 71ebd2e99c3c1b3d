model_DEPS := tensor safetensors core
model_LDLIBS := -lopenblas -lcjson -lm

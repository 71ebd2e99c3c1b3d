sae_DEPS := tensor safetensors core
sae_LDLIBS := -lopenblas -lcjson -lm

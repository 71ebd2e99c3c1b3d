steer_DEPS := model sae tensor safetensors core
steer_LDLIBS := -lm

tensor_DEPS := core
tensor_LDLIBS := -lopenblas -lm

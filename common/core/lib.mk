core_DEPS :=
core_LDLIBS := -lm

eval_DEPS := model sae store tensor safetensors core
eval_LDLIBS := -lrocksdb -lopenblas -lcjson -lm

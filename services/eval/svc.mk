eval_LIBS := eval model sae wire http

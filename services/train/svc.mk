train_LIBS := sae stream wire http

cli_LIBS := eval steer model sae wire

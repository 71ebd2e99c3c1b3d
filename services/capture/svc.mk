capture_LIBS := model stream http

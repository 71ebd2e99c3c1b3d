/* The CUDA backend's C API as every build sees it: with a device, a context opens and
 * "cuda" parses; without one (or without CUDA in the build) every entry point refuses
 * cleanly with SF_EUNSUP and "auto" falls back to the CPU. This test runs everywhere;
 * the kernels themselves are checked by the GPU lab (tests/gpu). */
#include <string.h>

#include "../../support/check.h"
#include "core/core.h"
#include "tensor/ops_cuda.h"
#include "tensor/tensor.h"
#include "tensor/tensor_cuda.h"

static void test_math_names(void)
{
    enum cuda_math m;
    CHECK(cuda_math_parse("fp32", &m) == 0 && m == CUDA_MATH_FP32);
    CHECK(cuda_math_parse("tf32", &m) == 0 && m == CUDA_MATH_TF32);
    CHECK(cuda_math_parse("bf16", &m) == 0 && m == CUDA_MATH_BF16);
    CHECK(cuda_math_parse("fp16", &m) == SF_EINVAL);
    CHECK(cuda_math_parse(NULL, &m) == SF_EINVAL);
    CHECK(strcmp(cuda_math_name(CUDA_MATH_TF32), "tf32") == 0);
    CHECK(strcmp(cuda_math_name((enum cuda_math)9), "unknown") == 0);
}

static void test_without_device(void)
{
    enum tensor_backend b;
    CHECK(!tensor_cuda_available());
    CHECK(tensor_backend_parse("cuda", &b) == SF_EUNSUP);
    CHECK(tensor_backend_parse("auto", &b) == 0 && b == TENSOR_CPU);
    struct cuda_ctx *ctx = (struct cuda_ctx *)&b; /* must be overwritten with NULL */
    CHECK(cuda_ctx_new(0, &ctx) == SF_EUNSUP && ctx == NULL);
    cuda_ctx_destroy(&ctx); /* NULL safe */
    struct cuda_buf buf = {0};
    CHECK(cuda_buf_alloc(&buf, 64) != 0 && buf.ptr == NULL && buf.bytes == 0);
    cuda_buf_free(&buf);
    CHECK(buf.ptr == NULL);
}

static void test_with_device(void)
{
    enum tensor_backend b;
    CHECK(tensor_cuda_available());
    CHECK(tensor_backend_parse("cuda", &b) == 0 && b == TENSOR_CUDA);
    CHECK(tensor_backend_parse("auto", &b) == 0 && b == TENSOR_CUDA);
    struct cuda_ctx *ctx = NULL;
    CHECK(cuda_ctx_new(tensor_cuda_device_count(), &ctx) == SF_EUNSUP && ctx == NULL);
    CHECK(cuda_ctx_new(0, &ctx) == 0 && ctx != NULL);
    if (!ctx) return;
    struct cuda_buf buf = {0};
    float in[16], out[16];
    for (int i = 0; i < 16; i++) in[i] = (float)i;
    CHECK(cuda_buf_alloc(&buf, sizeof in) == 0);
    CHECK(cuda_buf_upload(ctx, &buf, 0, in, sizeof in) == 0);
    CHECK(ops_cuda_add_inplace(ctx, buf.ptr, buf.ptr, 16) == 0);
    CHECK(cuda_buf_download(ctx, out, &buf, 0, sizeof out) == 0);
    for (int i = 0; i < 16; i++) CHECK(out[i] == 2.0f * (float)i);
    cuda_buf_free(&buf);
    CHECK(cuda_ctx_sync(ctx) == 0);
    cuda_ctx_destroy(&ctx);
    CHECK(ctx == NULL);
}

int main(void)
{
    log_init("test_cuda_backend", LOG_LOGFMT, LOG_OFF);
    test_math_names();
    if (tensor_cuda_device_count() > 0) {
        printf("CUDA device visible: checking the backend opens\n");
        test_with_device();
    } else {
        printf("no CUDA device (or built without CUDA): checking the clean refusals\n");
        test_without_device();
    }
    return check_exit();
}

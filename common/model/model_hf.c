/* model_hf: Hugging Face directories (being written). */
#include "core/core.h"
#include "model_impl.h"

int model_load_hf(const char *dir, struct model **out)
{
    (void)dir;
    *out = NULL;
    return SF_EUNSUP;
}

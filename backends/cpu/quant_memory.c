/* Raw memory of the output pool (output_pool.py): 2 MiB-aligned blocks advised to use transparent huge
 * pages, so that the first touch costs a few faults and later reuse none. */
#include <stdlib.h>

#include "quant_internal.h"

void *bnbq_pool_alloc(int64_t nbytes) {
    if (nbytes <= 0) return NULL;
    const size_t huge = (size_t)2 << 20;
    const size_t size = ((size_t)nbytes + huge - 1) & ~(huge - 1);
    void *p = NULL;
    if (posix_memalign(&p, huge, size) != 0) return NULL;
    bnbq_hugepage_hint(p, (int64_t)size);
    return p;
}

void bnbq_pool_free(void *p) { free(p); }

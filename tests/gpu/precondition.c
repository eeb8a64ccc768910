/* The GPU suite runs only where a CUDA device is usable; elsewhere the runner reports every
 * test as skipped with the reason, instead of pretending they passed. */
#include <stdbool.h>
#include <stddef.h>

#include "kernels/cuda_api.h"

bool test_suite_precondition(char *why, size_t size) {
  char reason[256];
  if (cuda_count_devices(reason, sizeof reason) > 0) return true;
  mcm_snprintf(why, size, "no GPU present (%s)", reason);
  return false;
}

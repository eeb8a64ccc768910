#include "kernels/context.h"
int main(void) { return 0; }

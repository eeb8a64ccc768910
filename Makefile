# mcm build.
#   make            library, ./train and ./infer (CUDA objects too where nvcc is found)
#   make CUDA=0     CPU-only build;  make CUDA=1 fails unless the CUDA toolchain is complete
#   make test       every CPU test; ends with "N passed, N failed"
#   make test SAN=1 the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-gpu   CUDA tests against the CPU reference (says so when no GPU is present)
#   make bench      mcm against PyTorch on the GPU (BENCH_DEVICE=cpu BENCH_SIZE=small: the harness on the CPU)
#   make deps       install the Debian packages mcm needs (tools/install-deps.sh)
#   make demo-shards  training data for ./train configs/demo.ini from the committed demo model
#   make demo       the demo model from nothing (tools/demo.sh): data, every stage, evaluation

CUDA ?= auto
SAN ?= 0
CUDA_ARCHS ?= 80 90
CC ?= gcc
NVCC ?= nvcc

# ---------------------------------------------------------------- system packages
# Missing packages are installed when we are root with apt-get; otherwise make stops and
# says exactly what to run. (Skipped for `make clean` and `make deps`.)
ifeq ($(filter clean deps,$(MAKECMDGOALS)),)
  DEPS_MISSING := $(shell tools/install-deps.sh --check 2>&1)
  ifneq ($(DEPS_MISSING),)
    ifeq ($(shell id -u),0)
      $(info mcm: $(DEPS_MISSING); installing them now (tools/install-deps.sh))
      DEPS_LOG := $(shell tools/install-deps.sh >&2; echo $$?)
      ifneq ($(DEPS_LOG),0)
        $(error tools/install-deps.sh failed; run it by hand to see why)
      endif
    else
      $(error $(DEPS_MISSING). Run: sudo tools/install-deps.sh)
    endif
  endif
endif

# ---------------------------------------------------------------- detection
HDF5_CFLAGS := $(shell pkg-config --cflags hdf5 2>/dev/null)
HDF5_LIBS   := $(shell pkg-config --libs hdf5 2>/dev/null)
INIH_LIBS   := $(shell pkg-config --libs inih 2>/dev/null)
# The OpenMP build of OpenBLAS: its threads are the same OpenMP pool as mcm's own loops. The
# pthread build's threads and OpenMP's spin against each other (measured on 2 cores: the demo
# VAE step 2.8x slower, a third of the time in sched_yield).
BLAS_DIR    := /usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS_CFLAGS := -I/usr/include/x86_64-linux-gnu/openblas-openmp
BLAS_LIBS   := -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas
SNDFILE_LIBS := $(shell pkg-config --libs sndfile 2>/dev/null)
AUDIO_LIBS  := $(shell pkg-config --libs soxr fftw3f jansson libpng fluidsynth 2>/dev/null)

NVCC_PATH := $(shell command -v $(NVCC) 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
ifeq ($(CUDA),0)
  USE_CUDA := 0
  CUDA_WHY := disabled (CUDA=0)
else ifeq ($(NVCC_PATH),)
  ifeq ($(CUDA),1)
    $(error CUDA=1 but nvcc was not found on PATH or in /usr/local/cuda/bin)
  endif
  USE_CUDA := 0
  CUDA_WHY := nvcc not found
else
  USE_CUDA := 1
endif

ifeq ($(SAN),1)
  # The sanitizers watch the CPU code; the CUDA runtime does not run under ASan here.
  ifneq ($(CUDA),1)
    USE_CUDA := 0
    CUDA_WHY := off under SAN=1
  endif
endif

ifeq ($(USE_CUDA),1)
  CUDA_HOME := $(patsubst %/bin/nvcc,%,$(NVCC_PATH))
  NVCC_VERSION := $(shell $(NVCC_PATH) --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
  CUDA_INC := $(CUDA_HOME)/include
  CUDA_LIBDIR := $(firstword $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib))
  CUDNN_H := $(firstword $(wildcard $(CUDA_INC)/cudnn_version.h /usr/include/cudnn_version.h /usr/include/x86_64-linux-gnu/cudnn_version.h))
  NCCL_H := $(firstword $(wildcard $(CUDA_INC)/nccl.h /usr/local/include/nccl.h /usr/include/nccl.h))
  ifeq ($(CUDNN_H),)
    $(error CUDA build: cuDNN headers not found (cudnn_version.h). Install cuDNN for CUDA $(NVCC_VERSION), or build with make CUDA=0)
  endif
  ifeq ($(NCCL_H),)
    $(error CUDA build: NCCL header nccl.h not found. Install NCCL, or build with make CUDA=0)
  endif
  CUDNN_VERSION := $(shell awk '/define CUDNN_MAJOR /{a=$$3}/define CUDNN_MINOR /{b=$$3}/define CUDNN_PATCHLEVEL /{c=$$3}END{print a"."b"."c}' $(CUDNN_H))
  NCCL_VERSION := $(shell awk '/define NCCL_MAJOR /{a=$$3}/define NCCL_MINOR /{b=$$3}/define NCCL_PATCH /{c=$$3}END{print a"."b"."c}' $(NCCL_H))
  NCCL_LIBDIR := $(dir $(firstword $(wildcard $(CUDA_HOME)/lib/libnccl.so $(CUDA_HOME)/lib64/libnccl.so /usr/local/lib/libnccl.so /usr/lib/x86_64-linux-gnu/libnccl.so)))
  CUDA_GENCODE := $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
                  -gencode arch=compute_$(lastword $(CUDA_ARCHS)),code=compute_$(lastword $(CUDA_ARCHS))
  CUDA_LIBS := -L$(CUDA_LIBDIR) -L$(NCCL_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -Wl,-rpath,$(NCCL_LIBDIR) \
               -lcudnn -lcublasLt -lcublas -lnccl -lcudart -lstdc++
  CUDA_DESC := nvcc $(NVCC_VERSION), targets sm_$(subst $() $(),/sm_,$(CUDA_ARCHS)); cuDNN $(CUDNN_VERSION); NCCL $(NCCL_VERSION)
else
  CUDA_DESC := no ($(CUDA_WHY))
endif

# MPI: data parallelism across CPU processes, and the NCCL id exchange across nodes.
MPI ?= auto
MPICC_PATH := $(shell command -v mpicc 2>/dev/null)
ifeq ($(MPI),1)
  ifeq ($(MPICC_PATH),)
    $(error MPI=1 but mpicc was not found; install libopenmpi-dev or build without MPI=1)
  endif
endif
ifeq ($(MPI),0)
  USE_MPI := 0
  MPI_DESC := disabled (MPI=0)
else ifneq ($(MPICC_PATH),)
  USE_MPI := 1
  MPI_CFLAGS := $(shell mpicc --showme:compile)
  MPI_LIBS := $(shell mpicc --showme:link)
  MPI_DESC := $(shell mpirun --version 2>/dev/null | head -1)
else
  USE_MPI := 0
  MPI_DESC := not found (single-process training only)
endif

ifeq ($(MAKELEVEL),0)
  $(info mcm build: CUDA $(CUDA_DESC) | BLAS OpenBLAS | HDF5 $(shell pkg-config --modversion hdf5 2>/dev/null) | MPI $(MPI_DESC)$(if $(filter 1,$(SAN)), | sanitizers ASan+UBSan))
endif

# Tests and benches run beside other processes (the runner forks, CI shares the machine):
# threads that spin after a parallel region would steal their cores.
export OMP_WAIT_POLICY ?= passive

# ---------------------------------------------------------------- flags
BUILD := build/$(if $(filter 1,$(SAN)),san,$(if $(filter 1,$(USE_CUDA)),cuda,cpu))
CFLAGS := -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Wshadow -Wno-unused-parameter \
          -fopenmp -ffp-contract=off -I. $(HDF5_CFLAGS) $(BLAS_CFLAGS) -DMCM_CUDA=$(USE_CUDA) -DMCM_MPI=$(USE_MPI) $(MPI_CFLAGS) -MMD -MP
LDLIBS := $(HDF5_LIBS) $(INIH_LIBS) $(SNDFILE_LIBS) $(AUDIO_LIBS) $(BLAS_LIBS) $(MPI_LIBS) -lm -lpthread
LDFLAGS := -fopenmp
ifeq ($(SAN),1)
  CFLAGS += -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=address,undefined
endif
NVCCFLAGS := -O3 -g -std=c++17 -I. $(HDF5_CFLAGS) $(BLAS_CFLAGS) $(MPI_CFLAGS) $(CUDA_GENCODE) -DMCM_CUDA=1 -DMCM_MPI=$(USE_MPI) -MMD -MP \
             -Xcompiler -Wall,-Wno-unused-parameter --expt-relaxed-constexpr
ifeq ($(USE_CUDA),1)
  CFLAGS += -I$(CUDA_INC)
  LDLIBS += $(CUDA_LIBS)
endif

# ---------------------------------------------------------------- sources
LIB_DIRS := kernels core data models diffusion
LIB_C  := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
LIB_CU := $(if $(filter 1,$(USE_CUDA)),$(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.cu)))
LIB_OBJ := $(LIB_C:%.c=$(BUILD)/%.o) $(LIB_CU:%.cu=$(BUILD)/%.cu.o)
LIB := $(BUILD)/libmcm.a

TEST_C := $(wildcard tests/*.c)
TEST_OBJ := $(TEST_C:%.c=$(BUILD)/%.o)
TEST_BIN := $(BUILD)/mcm_tests
GPU_TEST_C := tests/runner.c tests/net_check.c tests/train_util.c $(wildcard tests/gpu/*.c)
GPU_TEST_OBJ := $(GPU_TEST_C:%.c=$(BUILD)/gpu_%.o)
GPU_TEST_BIN := $(BUILD)/mcm_tests_gpu

BINS := train infer $(if $(wildcard prepare.c),prepare)
# Every tools/*.c is a standalone program: build/<flavour>/tools/<name>.
TOOLS_C := $(wildcard tools/*.c)
TOOLS_BIN := $(TOOLS_C:tools/%.c=$(BUILD)/tools/%)
BENCH_CPU := $(BUILD)/tools/bench_cpu
# Kernel workbench: each tools/workbench/*.cu is one standalone program (CUDA builds only).
WORKBENCH_CU := $(wildcard tools/workbench/*.cu)
WORKBENCH_BIN := $(WORKBENCH_CU:tools/workbench/%.cu=$(BUILD)/workbench/%)

.PHONY: all test test-gpu bench bench-cpu workbench demo-data demo-shards demo deps clean FORCE
all: $(BINS) $(TOOLS_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC_PATH) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/gpu_%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The binaries sit at the top; each build flavour keeps its own copy in $(BUILD).
$(BUILD)/bin/%: $(BUILD)/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

# FORCE: switching flavour (CUDA=0, SAN=1) must replace the top-level copy.
$(BINS): %: $(BUILD)/bin/% FORCE
	@cmp -s $< $@ || { cp $< $@ && echo "built ./$@ ($(BUILD))"; }

FORCE:

$(TEST_BIN): $(TEST_OBJ) $(LIB)
	$(CC) $(LDFLAGS) $(TEST_OBJ) $(LIB) $(LDLIBS) -o $@

$(GPU_TEST_BIN): $(GPU_TEST_OBJ) $(LIB)
	$(CC) $(LDFLAGS) $(GPU_TEST_OBJ) $(LIB) $(LDLIBS) -o $@

# Tests run from the repository root (fixtures are found by relative path).
test: $(TEST_BIN) $(BINS) $(TOOLS_BIN)
	$(if $(filter 1,$(SAN)),ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1) \
	  MCM_BIN_DIR=$(CURDIR) ./$(TEST_BIN) $(T)

ifeq ($(USE_CUDA),1)
test-gpu: $(GPU_TEST_BIN)
	./$(GPU_TEST_BIN) $(T)
else
test-gpu:
	@echo "make test-gpu: this build has no CUDA ($(CUDA_WHY)); no GPU test was run."
	@echo "0 passed, 0 failed"
endif

# make bench: mcm's networks, the 4-step sampler and the student's training step against
# PyTorch (diffusers / transformers) doing the same computation, in one run on one device:
# tools/bench, tools/bench_torch.py, then tools/bench_report.py writes bench/<date>-<device>.md.
# See bench/README.md (the GPU machine needs diffusers carried as a wheel). BENCH_ONLY=a,b picks
# cases; BENCH_TIMEOUT=S stops each side after S seconds (0: never).
BENCH_DEVICE ?= cuda
BENCH_SIZE ?= full
BENCH_ITERS ?= 10
BENCH_WARMUP ?= 2
BENCH_ONLY ?=
BENCH_TIMEOUT ?= 0
PYTHON ?= python3
MCM_VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo unknown)
BENCH_BIN := $(BUILD)/tools/bench
BENCH_ARGS = --device $(BENCH_DEVICE) --size $(BENCH_SIZE) --iters $(BENCH_ITERS) --warmup $(BENCH_WARMUP) \
             $(if $(BENCH_ONLY),--only $(BENCH_ONLY))

bench: $(BENCH_BIN)
	@case "$(BENCH_DEVICE)" in cpu|cuda) ;; *) echo "make bench: BENCH_DEVICE=$(BENCH_DEVICE); expected cpu or cuda"; exit 1;; esac
	@if [ "$(BENCH_DEVICE)" = cuda ] && [ "$(USE_CUDA)" != 1 ]; then \
	  echo "make bench: BENCH_DEVICE=cuda, but this build has no CUDA ($(CUDA_WHY)). Run it on a machine with a GPU and"; \
	  echo "  nvcc, or check the harness on the CPU: make bench BENCH_DEVICE=cpu BENCH_SIZE=small"; exit 1; fi
	@mkdir -p $(BUILD)/bench && rm -f $(BUILD)/bench/mcm.json $(BUILD)/bench/torch.json
	@# Each side rewrites its JSON after every row; one that fails or times out still leaves the
	@# rows it finished, the report is made from what there is, and make fails at the end.
	@rc=0; set -x; \
	timeout $(BENCH_TIMEOUT) ./$(BENCH_BIN) $(BENCH_ARGS) --mcm-version "$(MCM_VERSION)" --out $(BUILD)/bench/mcm.json || rc=1; \
	timeout $(BENCH_TIMEOUT) $(PYTHON) tools/bench_torch.py $(BENCH_ARGS) --out $(BUILD)/bench/torch.json || rc=1; \
	if [ -e $(BUILD)/bench/mcm.json ] && [ -e $(BUILD)/bench/torch.json ]; then \
	  $(PYTHON) tools/bench_report.py $(BUILD)/bench/mcm.json $(BUILD)/bench/torch.json --out-dir bench || rc=1; \
	else echo "make bench: no table: a side wrote no results (see above)"; rc=1; fi; \
	exit $$rc

$(BUILD)/tools/%: $(BUILD)/tools/%.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

bench-cpu: $(BENCH_CPU)
	./$(BENCH_CPU) $(REPS)

ifeq ($(USE_CUDA),1)
$(BUILD)/workbench/%.o: tools/workbench/%.cu
	@mkdir -p $(dir $@)
	$(NVCC_PATH) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/workbench/%: $(BUILD)/workbench/%.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

workbench: $(WORKBENCH_BIN)
	@echo "workbench programs: $(WORKBENCH_BIN)"
else
workbench:
	@echo "make workbench: the kernel workbench needs a CUDA build ($(CUDA_WHY))"; exit 1
endif

# The demo dataset: generated MIDI rendered with fluidsynth (data/demo/, not committed).
DEMO_CLIPS ?= 200
demo-data: $(BUILD)/tools/make_demo_dataset
	./$(BUILD)/tools/make_demo_dataset --out data/demo --clips $(DEMO_CLIPS) --seconds 10.24 --seed 0

# Training shards for `./train configs/demo.ini` from the committed demo model: the demo
# dataset (made if missing) in the demo's 2.56 s segments, with the demo VAE's latents and the
# demo text tower's caption embeddings.
demo-shards: all
	@[ -e data/demo/manifest.json ] || ./$(BUILD)/tools/make_demo_dataset --out data/demo --clips $(DEMO_CLIPS) --seconds 10.24 --seed 0
	./prepare --manifest data/demo/manifest.json --out data/demo/shards --overwrite --config configs/demo.ini \
	  --vae checkpoints/demo/vae.h5 --text-encoder checkpoints/demo/text_encoder.h5 --tokenizer checkpoints/demo/tokenizer

# The whole demo chain from nothing (tools/demo.sh): dataset, shards, VAE, vocoder, teacher,
# student, bundle (checkpoints/demo), samples and the evaluation report. Resumable.
# DEMO_SCALE=tiny: a few steps per stage into DEMO_WORK (tests/test_demo_chain.c runs it).
DEMO_SCALE ?= full
demo: all
	DEMO_SCALE=$(DEMO_SCALE) BUILD=$(BUILD) MCM_BIN_DIR=$(CURDIR) tools/demo.sh

deps:
	tools/install-deps.sh

clean:
	rm -rf build $(BINS)

-include $(shell find build -name '*.d' 2>/dev/null)
.SECONDARY: $(BINS:%=$(BUILD)/%.o) $(TOOLS_C:%.c=$(BUILD)/%.o)

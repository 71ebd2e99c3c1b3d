# saeflow: the only entry point for building, testing, benchmarking and the demo.
#
#   make            build every library, service and the `saeflow` command
#   make test       unit + integration tests, fuzz-corpus replay (ASan/UBSan)
#   make test SANITIZE=1   the same with every object built under ASan + UBSan
#   make demo       install what is missing, build, run the pipeline on stories260K
#   make deps       apt-get install every Debian package the build and tests need
#   make fuzz       libFuzzer binaries (clang); `make fuzz-run` fuzzes each briefly
#   make bench      benchmarks under tests/bench (tables, never assertions)
#   make lint       clang-format check and banned functions
#   make models     download the public model files (outside this environment)
#
# Layout the rules rely on (add files, not rules):
#   common/<lib>/*.c, *.cu   one static library per folder; common/<lib>/lib.mk sets
#                            <lib>_DEPS (other libs, dependency order) and
#                            <lib>_LDLIBS (system libraries)
#   services/<svc>/*.c       one binary per folder: build/bin/saeflow-<svc>
#                            (services/cli builds build/bin/saeflow); services/<svc>/svc.mk
#                            sets <svc>_LIBS, the libraries it calls (linked with their deps)
#   tests/unit/<lib>/test_*.c    one test binary per file, linked with <lib> and its deps
#   tests/fuzz/fuzz_<name>.c     libFuzzer target; corpus in tests/fuzz/corpus/<name>/;
#                                the file's first line names its lib: // lib: <lib>
#   tests/integration/*.sh       run by `make test` with SAEFLOW_BIN set
#   tests/bench/<name>/*.c       one benchmark binary per folder (links every lib)

SHELL := /bin/bash
CC ?= gcc
ifeq ($(origin CC),default)
CC := gcc
endif
CLANG ?= clang
PROTOC_C ?= protoc-c
PYTHON ?= python3
VERSION := 0.1.0

SAEFLOW_MODELS ?= $(abspath ../shared/models)
SAEFLOW_CORPUS ?= $(abspath ../shared/corpus)
# The first python3 with numpy (tests use it as an independent reference implementation).
SAEFLOW_PYTHON ?= $(shell for p in python3 /usr/bin/python3; do $$p -c 'import numpy' 2>/dev/null && command -v $$p && break; done)
export SAEFLOW_MODELS SAEFLOW_CORPUS SAEFLOW_PYTHON

# --- flags -------------------------------------------------------------------
ifeq ($(SANITIZE),1)
BUILD ?= build-san
else
BUILD ?= build
endif
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla
WERROR ?= 1
ifeq ($(WERROR),1)
WARN += -Werror
endif
OPT ?= -O2
CPPFLAGS_ALL := -D_GNU_SOURCE -DSAEFLOW_VERSION=\"$(VERSION)\" -Icommon -I$(BUILD)/gen
CFLAGS_ALL := -std=c11 $(OPT) -g -fno-strict-aliasing -pthread -fopenmp $(WARN)
LDFLAGS_ALL := -pthread -fopenmp

ifeq ($(SANITIZE),1)
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
CFLAGS_ALL += $(SANFLAGS)
LDFLAGS_ALL += $(SANFLAGS)
CUDA := 0
endif

# --- CUDA detection -------------------------------------------------------------
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
ifeq ($(CUDA),0)
HAVE_CUDA :=
else ifneq ($(NVCC),)
HAVE_CUDA := 1
endif
ifeq ($(HAVE_CUDA),1)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90
NVCCFLAGS := -O3 -std=c++17 $(CUDA_ARCH) -Icommon -Xcompiler -fPIC,-Wall --expt-relaxed-constexpr
CPPFLAGS_ALL += -DSAEFLOW_CUDA=1
CUDA_LDLIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
$(info saeflow: nvcc found at $(NVCC): building the CUDA backend (CUDA=0 turns it off))
else
CUDA_LDLIBS :=
ifneq ($(MAKECMDGOALS),clean)
$(info saeflow: building without CUDA ($(if $(filter 0,$(CUDA)),CUDA=0,nvcc not found)))
endif
endif

# --- generated protobuf code ------------------------------------------------------
PROTOS := $(wildcard proto/*.proto)
PROTO_C := $(patsubst proto/%.proto,$(BUILD)/gen/%.pb-c.c,$(PROTOS))
PROTO_H := $(PROTO_C:.c=.h)

$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(@D)
	$(PROTOC_C) --proto_path=proto --c_out=$(BUILD)/gen $<
# Generated code is kept: make would otherwise treat the header as intermediate, delete it
# after the build and rebuild every object on the next run.
.SECONDARY: $(PROTO_C) $(PROTO_H) $(patsubst $(BUILD)/%,build-fuzz/%,$(PROTO_C) $(PROTO_H))

# --- libraries -------------------------------------------------------------------
LIBS := $(notdir $(patsubst %/,%,$(dir $(wildcard common/*/lib.mk))))
include $(wildcard common/*/lib.mk)

lib_srcs = $(wildcard common/$(1)/*.c) $(if $(filter wire,$(1)),$(PROTO_C))
lib_cu = $(if $(HAVE_CUDA),$(wildcard common/$(1)/*.cu))
lib_objs = $(patsubst %.c,$(BUILD)/obj/%.o,$(patsubst $(BUILD)/%,%,$(call lib_srcs,$(1)))) \
           $(patsubst %.cu,$(BUILD)/obj/%.cu.o,$(call lib_cu,$(1)))
lib_a = $(BUILD)/lib/libsf_$(1).a
# a library, then the libraries it depends on (each lib.mk lists its deps in order)
lib_closure = $(1) $($(1)_DEPS)
closure_archives = $(foreach l,$(call lib_closure,$(1)),$(call lib_a,$(l)))
closure_ldlibs = $(foreach l,$(call lib_closure,$(1)),$($(l)_LDLIBS)) \
                 $(if $(filter tensor,$(call lib_closure,$(1))),$(CUDA_LDLIBS))

define LIB_RULES
$(call lib_a,$(1)): $(call lib_objs,$(1))
	@mkdir -p $$(@D)
	@rm -f $$@
	ar rcs $$@ $$^
endef
$(foreach l,$(LIBS),$(eval $(call LIB_RULES,$(l))))

ALL_ARCHIVES := $(foreach l,$(LIBS),$(call lib_a,$(l)))
ALL_LDLIBS := $(sort $(foreach l,$(LIBS),$($(l)_LDLIBS))) $(CUDA_LDLIBS) -lm

# The generated header is order-only: it must exist before anything compiles, and the
# dependency files (-MMD) make exactly the objects that include it depend on it.
$(BUILD)/obj/%.o: %.c | $(PROTO_H)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c $(PROTO_H)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) -std=c11 $(OPT) -g -fPIC $(SANFLAGS) -c $< -o $@

$(BUILD)/obj/%.cu.o: %.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -DSAEFLOW_CUDA=1 -MMD -MP -MF $(@:.o=.d) -c $< -o $@

# --- services and the saeflow command ------------------------------------------------
SERVICES := $(notdir $(patsubst %/,%,$(dir $(wildcard services/*/*.c))))
SERVICES := $(sort $(SERVICES))
svc_bin = $(BUILD)/bin/$(if $(filter cli,$(1)),saeflow,saeflow-$(1))
LINK_ALL = -Wl,--start-group $(ALL_ARCHIVES) -Wl,--end-group $(ALL_LDLIBS)
include $(wildcard services/*/svc.mk)
# a service links the libraries its svc.mk declares and their dependencies, nothing else
svc_libs = $(sort $(foreach l,$($(1)_LIBS),$(call lib_closure,$(l))))
svc_archives = $(foreach l,$(call svc_libs,$(1)),$(call lib_a,$(l)))
svc_ldlibs = $(sort $(foreach l,$(call svc_libs,$(1)),$($(l)_LDLIBS))) \
             $(if $(filter tensor,$(call svc_libs,$(1))),$(CUDA_LDLIBS)) -lm

define SVC_RULES
$(if $($(1)_LIBS),,$(error services/$(1)/svc.mk must set $(1)_LIBS))
$(call svc_bin,$(1)): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard services/$(1)/*.c)) $(call svc_archives,$(1))
	@mkdir -p $$(@D)
	$(CC) $(LDFLAGS_ALL) -o $$@ $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard services/$(1)/*.c)) -Wl,--start-group $(call svc_archives,$(1)) -Wl,--end-group $(call svc_ldlibs,$(1))
endef
$(foreach s,$(SERVICES),$(eval $(call SVC_RULES,$(s))))
BINS := $(foreach s,$(SERVICES),$(call svc_bin,$(s)))

# --- unit tests ----------------------------------------------------------------------
UNIT_SRCS := $(wildcard tests/unit/*/test_*.c)
unit_bin = $(BUILD)/tests/$(basename $(notdir $(1)))
unit_lib = $(notdir $(patsubst %/,%,$(dir $(1))))
tests_support := $(wildcard tests/support/*.c)
TESTS_SUPPORT_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(tests_support))

define UNIT_RULES
$(call unit_bin,$(1)): $(BUILD)/obj/$(1:.c=.o) $(TESTS_SUPPORT_OBJS) $(call closure_archives,$(call unit_lib,$(1)))
	@mkdir -p $$(@D)
	$(CC) $(LDFLAGS_ALL) -o $$@ $$(filter %.o,$$^) $(call closure_archives,$(call unit_lib,$(1))) $(call closure_ldlibs,$(call unit_lib,$(1))) -lm
endef
$(foreach t,$(UNIT_SRCS),$(eval $(call UNIT_RULES,$(t))))
UNIT_BINS := $(foreach t,$(UNIT_SRCS),$(call unit_bin,$(t)))

# --- benchmarks ----------------------------------------------------------------------
BENCHES := $(sort $(notdir $(patsubst %/,%,$(dir $(wildcard tests/bench/*/*.c)))))
define BENCH_RULES
$(BUILD)/bench/bench_$(1): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tests/bench/$(1)/*.c)) $(ALL_ARCHIVES)
	@mkdir -p $$(@D)
	$(CC) $(LDFLAGS_ALL) -o $$@ $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tests/bench/$(1)/*.c)) $(LINK_ALL)
endef
$(foreach b,$(BENCHES),$(eval $(call BENCH_RULES,$(b))))
BENCH_BINS := $(foreach b,$(BENCHES),$(BUILD)/bench/bench_$(b))

# --- GPU kernel lab: tests/gpu/*.c, one binary each, whose FIRST LINE names its lib
# (`// lib: sae`): linked with that lib's closure. Each checks its kernels against the
# CPU oracle and exits 77 without a CUDA device; `make test` runs them with the unit tests.
GPU_SRCS := $(wildcard tests/gpu/*.c)
gpu_bin = $(BUILD)/gpu/$(basename $(notdir $(1)))
gpu_lib = $(shell sed -n '1s|^// lib: *\([a-z_]*\).*|\1|p' $(1))
define GPU_RULES
$(call gpu_bin,$(1)): $(BUILD)/obj/$(1:.c=.o) $(TESTS_SUPPORT_OBJS) $(call closure_archives,$(call gpu_lib,$(1)))
	@mkdir -p $$(@D)
	$(CC) $(LDFLAGS_ALL) -o $$@ $$(filter %.o,$$^) $(call closure_archives,$(call gpu_lib,$(1))) $(call closure_ldlibs,$(call gpu_lib,$(1))) -lm
endef
$(foreach t,$(GPU_SRCS),$(eval $(call GPU_RULES,$(t))))
GPU_BINS := $(foreach t,$(GPU_SRCS),$(call gpu_bin,$(t)))

# --- fuzzing (clang + libFuzzer, always with ASan + UBSan) ---------------------------------
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BUILD := build-fuzz
FUZZ_SAN := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -O1 -g -pthread -fopenmp=libgomp -Wall -Wextra -Wno-unused-command-line-argument $(FUZZ_SAN)
fuzz_lib = $(shell sed -n '1s|^// lib: *\([a-z_]*\).*|\1|p' $(1))
fuzz_objs = $(foreach l,$(call lib_closure,$(1)),$(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(patsubst $(FUZZ_BUILD)/%,%,$(subst $(BUILD)/,$(FUZZ_BUILD)/,$(call lib_srcs,$(l))))))

$(FUZZ_BUILD)/obj/%.o: %.c $(patsubst $(BUILD)/%,$(FUZZ_BUILD)/%,$(PROTO_H))
	@mkdir -p $(@D)
	$(CLANG) $(subst $(BUILD)/gen,$(FUZZ_BUILD)/gen,$(filter-out -DSAEFLOW_CUDA=1,$(CPPFLAGS_ALL))) -DSAEFLOW_FUZZ=1 $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@
$(FUZZ_BUILD)/obj/gen/%.o: $(FUZZ_BUILD)/gen/%.c
	@mkdir -p $(@D)
	$(CLANG) $(subst $(BUILD)/gen,$(FUZZ_BUILD)/gen,$(CPPFLAGS_ALL)) -std=c11 -O1 -g $(FUZZ_SAN) -c $< -o $@
$(FUZZ_BUILD)/gen/%.pb-c.c $(FUZZ_BUILD)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(@D)
	$(PROTOC_C) --proto_path=proto --c_out=$(FUZZ_BUILD)/gen $<

define FUZZ_RULES
$(FUZZ_BUILD)/bin/$(basename $(notdir $(1))): $(FUZZ_BUILD)/obj/$(1:.c=.o) $(call fuzz_objs,$(call fuzz_lib,$(1)))
	@mkdir -p $$(@D)
	$(CLANG) -fsanitize=fuzzer,address,undefined -fopenmp=libgomp -pthread -o $$@ $$^ $(call closure_ldlibs,$(call fuzz_lib,$(1))) -lm
endef
$(foreach f,$(FUZZ_SRCS),$(eval $(call FUZZ_RULES,$(f))))
FUZZ_BINS := $(foreach f,$(FUZZ_SRCS),$(FUZZ_BUILD)/bin/$(basename $(notdir $(f))))

# --- top-level targets ----------------------------------------------------------------
.PHONY: all test test-unit test-integration test-fuzz fuzz fuzz-run bench lint deps \
        models demo clean format
.DEFAULT_GOAL := all

all: $(ALL_ARCHIVES) $(BINS) $(UNIT_BINS) $(GPU_BINS)

# `make test` is what every commit must pass: lint, the unit tests, the fuzz corpora replayed
# under ASan + UBSan, the integration tests on real binaries, and (unless this already
# is the sanitizer build) the unit tests once more built with ASan + UBSan, with OpenBLAS on
# other kernels and one thread (tests/blas_alt_env.sh), so machine-dependent results fail here.
test: all $(BENCH_BINS)
	@tests/lint.sh
	@$(MAKE) --no-print-directory test-unit
	@$(MAKE) --no-print-directory test-fuzz
	@$(MAKE) --no-print-directory test-integration
ifneq ($(SANITIZE),1)
	@echo "unit tests again under ASan/UBSan with $$(tests/blas_alt_env.sh)"
	@env $$(tests/blas_alt_env.sh) $(MAKE) --no-print-directory SANITIZE=1 test-unit
endif
	@echo "make test: all passed"

test-unit: $(UNIT_BINS) $(GPU_BINS)
	@tests/run_unit.sh $(UNIT_BINS) $(GPU_BINS)

test-integration: all
	@SAEFLOW_BIN=$(abspath $(BUILD)/bin) SAEFLOW_BUILD=$(abspath $(BUILD)) tests/run_integration.sh

fuzz: $(FUZZ_BINS)

# Replays every checked-in corpus once under ASan + UBSan.
test-fuzz: $(FUZZ_BINS)
	@tests/run_fuzz_replay.sh $(FUZZ_BINS)

FUZZ_SECONDS ?= 60
fuzz-run: $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do n=$$(basename $$f); n=$${n#fuzz_}; \
	  mkdir -p $(FUZZ_BUILD)/new/$$n; \
	  echo "fuzzing $$n for $(FUZZ_SECONDS)s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(FUZZ_BUILD)/new/$$n tests/fuzz/corpus/$$n || exit 1; \
	done

bench: $(BENCH_BINS)
	@for b in $(BENCH_BINS); do echo "== $$b"; $$b || exit 1; done

lint:
	@tests/lint.sh

format:
	@clang-format -i $$(git ls-files '*.c' '*.h' '*.cu')

DEB_PACKAGES := build-essential clang libclang-rt-14-dev pkg-config clang-format \
  libzmq3-dev libprotobuf-c-dev protobuf-c-compiler librocksdb-dev \
  libcurl4-openssl-dev libopenblas-dev libmicrohttpd-dev libcjson-dev \
  python3 python3-numpy python3-yaml curl ca-certificates
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "deps: run as root:"; echo "  sudo apt-get install -y $$missing"; exit 1; fi

models:
	@tests/fetch_models.sh

demo: deps all
	@tests/demo.sh

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD)/obj $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)

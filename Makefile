# The table of contents of the project: `make help` lists every target.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Every target reads GPT-2's tokenizer from this cache; `make setup` guarantees it (download_tokens.py tokenizer).
export TIKTOKEN_CACHE_DIR ?= $(CURDIR)/.cache/tiktoken
# FineWeb-Edu tokens for the GPU variants: 3.1B to train on (5,722 steps of 524,288) + 0.1B of validation.
FINEWEB_TOKENS ?= 3200000000
# sample-10BT holds 10B tokens; gpt2_large and gpt2_xl need sample-100BT (FINEWEB_NAME=sample-100BT)
FINEWEB_NAME ?= sample-10BT

# PyTorch's own index of CPU-only wheels: a machine without an NVIDIA GPU gets a torch of a few hundred MB, not the
# multi-GB CUDA build that plain pip installs on Linux. Bounded waits: an unreachable index fails in seconds.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_NETWORK ?= --timeout 15 --retries 1
# torch is pinned to the version the test suite was last run with, the CUDA build on a GPU machine too: the newest
# is not what was tested (and pip, when the CPU index is unreachable, takes the newest its other sources have:
# measured here, a CUDA build, 2.14.1 from a mirror).
TORCH_VERSION ?= 2.13.0

.PHONY: help setup setup-dev test demo demo_figures eval eval_gpt2 variants data_fineweb data_fineweb_cached data_shakespeare bench_prepare \
        train_baseline train_increase_max_lr train_rotational_pos_emb train_swiglu train_ddp c bench_c

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-26s %s\n", $$1, $$2}'

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first, the build that fits this machine; an installed torch is kept (no import: that takes seconds)
	@if $(PY) -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"; then \
	  echo "setup: torch is already installed in $(VENV); keeping it"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "setup: NVIDIA GPU found (nvidia-smi): installing PyTorch $(TORCH_VERSION)'s CUDA build"; \
	  $(PY) -m pip install "torch==$(TORCH_VERSION)"; \
	else \
	  echo "setup: no NVIDIA GPU (no nvidia-smi): installing PyTorch's CPU build from $(TORCH_CPU_INDEX)"; \
	  $(PY) -m pip install $(PIP_NETWORK) --index-url $(TORCH_CPU_INDEX) "torch==$(TORCH_VERSION)" || { \
	    echo "setup: $(TORCH_CPU_INDEX) could not be used: installing the torch $(TORCH_VERSION) that pip finds (may be the CUDA build)"; \
	    $(PY) -m pip install "torch==$(TORCH_VERSION)"; }; \
	fi
	$(PY) -m pip install -r requirements.txt
	$(PY) download_tokens.py tokenizer
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

setup: $(VENV)/.runtime ## create .venv: torch (CPU build without an NVIDIA GPU), the runtime dependencies, GPT-2's tokenizer

setup-dev: $(VENV)/.dev ## setup, plus the test-only dependencies (pytest, transformers, lm-eval)

test: setup-dev ## run the test suite on the CPU (setup-dev downloads once; the tests download nothing)
	$(PY) -m pytest -q tests

# --- data ---------------------------------------------------------------------------------------

# The target is a stamp written once prepare_data.py finished: after Ctrl-C the next make runs it again, and it
# continues after the finished shards (make would delete an interrupted target: not the manifest that records them)
data/pydoc/.prepared: | setup
	@# English prose that ships with Python itself (the text of help() topics): no download needed
	$(PY) get_text.py pydoc --out_dir data/pydoc_text
	$(PY) prepare_data.py --input 'data/pydoc_text/*.txt' --out_dir data/pydoc --prefix pydoc
	touch $@

# Tiny Shakespeare: ../shared/data's copy where there is one, else downloaded (sha256-checked); offline, the pydoc text
SHARED_DATA ?= ../shared/data
data_shakespeare: setup ## Tiny Shakespeare into data/shakespeare (found or downloaded); offline, make demo's text into data/pydoc
	@if text=$$($(PY) get_text.py tinyshakespeare --shared $(SHARED_DATA)); then \
	  $(PY) prepare_data.py --input "$$text" --out_dir data/shakespeare; \
	else \
	  echo "data_shakespeare: no Tiny Shakespeare offline; preparing Python's help() text (make demo's) into data/pydoc instead"; \
	  $(MAKE) --no-print-directory data/pydoc/.prepared; \
	fi

data_fineweb_cached: setup ## FineWeb-Edu already tokenized (the speedrun's kjj0/finewebedu10B-gpt2): 3.2B tokens into data/fineweb_edu, no GPU time spent tokenizing
	$(PY) download_tokens.py finewebedu10B --train_shards 32 --out_dir data/fineweb_edu

data_fineweb: setup ## stream FineWeb-Edu (sample-10BT) from Hugging Face into data/fineweb_edu (needs internet)
	$(PY) prepare_data.py --dataset HuggingFaceFW/fineweb-edu --name $(FINEWEB_NAME) --out_dir data/fineweb_edu \
		--max_tokens $(FINEWEB_TOKENS)

bench_prepare: data/pydoc/.prepared ## tokenizer throughput: ours (process pool) next to tiktoken's encode_ordinary_batch
	$(PY) prepare_data.py --input 'data/pydoc_text/*.txt' --bench

# --- evaluation ---------------------------------------------------------------------------------

eval_gpt2: setup ## reference numbers: OpenAI's GPT-2 124M on CommonsenseQA and HellaSwag (needs internet)
	$(PY) eval_commonsense_qa.py --hf gpt2 --out out/gpt2/commonsense_qa.json
	$(PY) eval_hellaswag.py --hf gpt2 --out out/gpt2/hellaswag.json

eval: setup ## score a checkpoint on both benchmarks: make eval CKPT=out/swiglu/ckpt.pt (data from Hugging Face)
	$(PY) eval_commonsense_qa.py $(CKPT) --out $(dir $(CKPT))commonsense_qa.json
	$(PY) eval_hellaswag.py $(CKPT) --out $(dir $(CKPT))hellaswag.json

CKPT ?= out/demo_cpu/ckpt.pt
PROMPT ?= The for statement
.PHONY: sample bench_sample
sample: setup ## stream text from a checkpoint: make sample CKPT=out/demo_cpu/ckpt.pt PROMPT="The for statement"
	$(PY) sample.py $(CKPT) --prompt "$(PROMPT)"

bench_sample: setup ## tokens/s of generation with and without the KV cache, 124M-shaped model on the CPU (minutes)
	$(PY) -m measure.bench_sample

variants: setup ## print docs/training.md's variants table (parameters per config)
	$(PY) -m measure.variants

# --- training -----------------------------------------------------------------------------------

# make demo: the modern recipe (configs/demo_cpu.py); make demo DEMO=baseline: GPT-2's (configs/demo_cpu_baseline.py).
# train.py exits 130/143 when Ctrl-C or SIGTERM stopped it: make stops there, and the picture stays as it is. The
# picture goes beside the run: media/demo_loss.png/.md, which the README cites, change only by `make demo_figures`.
DEMO ?= modern
DEMO_CONFIG = $(if $(filter baseline,$(DEMO)),configs/demo_cpu_baseline.py,configs/demo_cpu.py)
DEMO_OUT = $(if $(filter baseline,$(DEMO)),out/demo_cpu_baseline,out/demo_cpu)
demo: data/pydoc/.prepared ## a tiny GPT on the CPU, modern recipe (DEMO=baseline: GPT-2's), offline after setup; out/demo_cpu/loss.png/.md
	$(if $(filter-out modern baseline,$(DEMO)),$(error DEMO is modern or baseline, not $(DEMO)))
	$(PY) train.py $(DEMO_CONFIG)
	$(PY) plot.py $(DEMO_OUT) --loss_curve $(DEMO_OUT)/loss.png

demo_figures: setup ## media/demo_loss.png/.md, the README's, redrawn from make demo's run in out/demo_cpu
	$(PY) plot.py out/demo_cpu --loss_curve media/demo_loss.png

# ABLATION_INPUT=FILE: any text instead of Tiny Shakespeare, tokenized into ABLATION_DATA
ABLATION_INPUT ?=
ABLATION_DATA ?= data/shakespeare

ablation_cpu: setup ## every variant at CPU scale, 2 seeds, an LR sweep and the speedrun less each technique (~2 h on 2 cores): media/ablation_cpu.* and ablation_speedrun.*
ifeq ($(ABLATION_INPUT),)
	@$(MAKE) --no-print-directory data_shakespeare
else
	$(PY) prepare_data.py --input $(ABLATION_INPUT) --out_dir $(ABLATION_DATA)
endif
	@# offline without Tiny Shakespeare, data_shakespeare prepared the pydoc text instead
	data=$$(test -f $(ABLATION_DATA)/manifest.json && echo $(ABLATION_DATA) || echo data/pydoc) && \
	$(PY) -m measure.ablation_cpu --data_dir $$data && $(PY) -m measure.ablation_cpu --name ablation_speedrun --data_dir $$data

# the GPU variants' runs, by name: out/NAME/ as configs/NAME.py writes it, where it has a log. The CPU runs (the demos,
# quant_cpu, the ablation) have pictures of their own. PLOT_VARIANTS="baseline gpt2_medium": any other choice.
PLOT_VARIANTS ?= baseline increase_max_lr rotational_pos_emb swiglu modern speedrun
PLOT_RUNS = $(dir $(wildcard $(PLOT_VARIANTS:%=out/%/log.jsonl)))

.PHONY: plots ablation_cpu
plots: setup ## compare the GPU variants' runs in out/ (PLOT_VARIANTS=...): media/convergence_comparison.png, commonsense_qa.png, summary.md/.csv
	$(if $(PLOT_RUNS),$(PY) plot.py $(PLOT_RUNS) --out media/,@echo "no run of $(PLOT_VARIANTS) in out/ has a log.jsonl yet: train one first (make train_baseline, ...)")

train_baseline: setup ## GPT-2 124M, the llm.c/build-nanogpt recipe (needs data_fineweb and a GPU)
	$(PY) train.py configs/baseline.py

train_increase_max_lr: setup ## the baseline with 3x the max learning rate
	$(PY) train.py configs/increase_max_lr.py

train_rotational_pos_emb: setup ## RoPE instead of learned positions, with the increased max LR
	$(PY) train.py configs/rotational_pos_emb.py

train_swiglu: setup ## SwiGLU MLP on top of RoPE and the increased max LR
	$(PY) train.py configs/swiglu.py

NPROC ?= 8
train_ddp: setup ## several GPUs of one machine (DDP): make train_ddp CONFIG=configs/baseline.py NPROC=8
	$(if $(CONFIG),,$(error give the config: make train_ddp CONFIG=configs/baseline.py NPROC=8))
	$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) train.py $(CONFIG)

.PHONY: train_modern
train_modern: setup ## Muon, QK-norm, ReLU², RMSNorm, untied zero-init head, soft-cap, WSD: 1.0B tokens (cheapgpt2/muon.py)
	$(PY) train.py configs/modern.py

.PHONY: train_speedrun
train_speedrun: setup ## modern + document masking, growing window, value embeddings, U-net skips, momentum warmup: 0.78B tokens
	$(PY) train.py configs/speedrun.py

# --- GPU checks ---------------------------------------------------------------------------------

.PHONY: bench_gpu smoke
bench_gpu: setup ## every GPU config for 20 steps on synthetic tokens: tokens/s, MFU, memory, compile time, projected $
	$(PY) -m measure.bench_train --out media/bench_gpu.md

smoke: setup ## every GPU config at its real shape and context, one step on the CPU in bf16 (shape/dtype bugs; in make test on AVX-512 CPUs)
	$(PY) -m measure.bench_train --smoke

# make gpu_check's tokens: Python's own standard library sources (no download), made here, small enough (4 MB) to travel
data/gpu_check/.prepared: | setup
	$(PY) get_text.py pystdlib --out_dir data/pystdlib_text
	$(PY) prepare_data.py --input 'data/pystdlib_text/*.txt' --out_dir data/gpu_check --prefix stdlib --val_tokens 262144
	touch $@

.PHONY: gpu_check_data gpu_check
gpu_check_data: data/gpu_check/.prepared ## on any machine, before make gpu_check: its 2.1M tokens, and GPT-2's BPE in .cache/tiktoken
	@# in the tree, whatever TIKTOKEN_CACHE_DIR says here: a GPU machine without internet reads it from there
	TIKTOKEN_CACHE_DIR=$(CURDIR)/.cache/tiktoken $(PY) download_tokens.py tokenizer

# A GPU machine without internet has no .venv to build: the venv's python where there is one, else the system's
# (a GPU image's, with torch); no setup prerequisite. DEVICE=cpu: the dry path at a tiny shape (make test runs it).
DEVICE ?= cuda
GPU_CHECK_DATA ?= data/gpu_check
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu_check: ## on a GPU, ~6 min: compiled throughput, 100 training steps, act. checkpointing, sample -> media/gpu_check.md
	$(GPU_PY) -m measure.gpu_check --device $(DEVICE) --data_dir $(GPU_CHECK_DATA) $(GPU_CHECK_ARGS)

# --- quantized inference ------------------------------------------------------------------------

QUANT_CKPT ?= out/quant_cpu/ckpt.pt
# Tiny Shakespeare (data_shakespeare finds or downloads it); offline without it, QUANT_DATA=data/pydoc (make demo's text)
QUANT_DATA ?= data/shakespeare
QUANT_DATA_TARGET = $(if $(filter data/shakespeare,$(QUANT_DATA)),data_shakespeare,$(if $(filter data/pydoc,$(QUANT_DATA)),data/pydoc/.prepared))

.PHONY: train_quant_cpu bench_inference
train_quant_cpu: setup ## the model bench_inference reports on: the modern recipe, 4L 128w, 1024 context, Tiny Shakespeare (QUANT_DATA=...)
	$(if $(QUANT_DATA_TARGET),@$(MAKE) --no-print-directory $(QUANT_DATA_TARGET))
	@test -f $(QUANT_DATA)/manifest.json || { echo "train_quant_cpu: no token shards in $(QUANT_DATA); offline without Tiny Shakespeare, use make demo's text: make train_quant_cpu bench_inference QUANT_DATA=data/pydoc"; exit 1; }
	OMP_NUM_THREADS=2 $(PY) train.py configs/quant_cpu.py --data_dir=$(QUANT_DATA)

bench_inference: setup c ## every quantization scheme's quality, speed and memory, PyTorch and the C engine: media/bench_inference.md (QUANT_CKPT=..., QUANT_DATA=...)
	$(PY) -m measure.bench_inference $(QUANT_CKPT) --data_dir $(QUANT_DATA) --threads 1 --eval_tokens 4096 --compile off --backends pytorch,c
	@# torch.compile takes minutes per scheme on 2 busy cores: speed only, for the reference and the two int8 weight schemes
	$(PY) -m measure.bench_inference $(QUANT_CKPT) --data_dir $(QUANT_DATA) --threads 1 --eval_tokens 0 --compile on \
		--schemes none,int8wo,q8_0 --out media/bench_inference_compile.md

# --- the C engine -------------------------------------------------------------------------------

CC ?= cc
C_OUT ?= c/gpt
C_SOURCES := c/run.c c/flags.c c/gpt.c c/matmul.c c/bpe.c
# each of -march=native and -fopenmp where the compiler takes it (asked when a C target runs), plain -O3 where not
C_FLAG_OK = $(shell $(CC) $(1) -x c -c /dev/null -o /dev/null 2>/dev/null && echo $(1))
CFLAGS ?= -O3 $(call C_FLAG_OK,-march=native) $(call C_FLAG_OK,-fopenmp)

c: ## build the C inference engine c/gpt (C11, libc, libm, OpenMP where available; CFLAGS overridable)
	@# -Wno-unknown-pragmas: built without OpenMP, its pragmas are meant to be ignored
	$(CC) $(CFLAGS) -std=c11 -Wall -Wextra -Wno-unknown-pragmas -o $(C_OUT) $(C_SOURCES) -lm

bench_c: c setup ## C engine speed at the 124M shape, fp32 and q8_0, 2 threads (measure/bench_c.py); LLAMA2C=DIR: karpathy/llama2.c beside it
	$(PY) -m measure.bench_c --cflags "$(CFLAGS)" $(if $(LLAMA2C),--llama2c $(LLAMA2C))

# --- the HTTP server ----------------------------------------------------------------------------

SERVER_SOURCES := c/server.c c/loop.c c/request.c c/response.c c/scheduler.c c/metrics.c c/http.c c/json.c c/flags.c c/gpt.c c/matmul.c c/bpe.c
HOST ?= 127.0.0.1
PORT ?= 8080
SERVE_ARGS ?=

c: c/gpt-server

c/gpt-server: $(SERVER_SOURCES) c/server.h c/flags.h c/gpt.h c/matmul.h c/bpe.h c/http.h c/json.h
	$(CC) $(CFLAGS) -std=c11 -Wall -Wextra -o $@ $(SERVER_SOURCES) -lm -lpthread

.PHONY: server serve
.PHONY: bench_serve
bench_serve: c setup ## many clients at once: c/gpt-server, and llama-server beside it with LLAMACPP=DIR (a llama.cpp build)
	$(PY) -m measure.bench_serve $(if $(LLAMACPP),--llamacpp $(LLAMACPP))

.PHONY: bench_xl
bench_xl: c setup ## one stream at GPT-2 XL's shape, every weight type; LLAMACPP=DIR: llama-bench beside it (about 30 minutes)
	$(PY) -m measure.bench_xl $(if $(LLAMACPP),--llamacpp $(LLAMACPP))

# CommonsenseQA's validation split as .jsonl (tau/commonsense_qa's schema): ../shared/data's copy where there is one
CSQA_DATA ?= $(SHARED_DATA)/commonsense_qa_validation.jsonl
.PHONY: bench_eval_served
bench_eval_served: c setup-dev ## CommonsenseQA on make demo's checkpoint in process and through c/gpt-server by lm-eval, cache on/off (CSQA_DATA=FILE)
	$(PY) -m measure.bench_eval_served $(CKPT) --data $(CSQA_DATA)

server: c/gpt-server ## build the OpenAI-compatible HTTP server c/gpt-server (also part of make c)

serve: c/gpt-server ## serve a model over HTTP on 127.0.0.1:8080: make serve MODEL=model.bin [PORT=8080] [SERVE_ARGS=...]
	@test -n "$(MODEL)" || { echo "error: give the model file: make serve MODEL=model.bin (written by export.py)"; exit 1; }
	./c/gpt-server $(MODEL) --host $(HOST) --port $(PORT) $(SERVE_ARGS)

# --- scaling up (docs/scaling.md): each config's memory per GPU, time and dollars from `make dry_run` -------

.PHONY: dry_run train_gpt2_medium train_gpt2_large train_gpt2_xl train_modern_medium
SCALE_CONFIGS = baseline increase_max_lr rotational_pos_emb swiglu modern gpt2_medium gpt2_large gpt2_xl modern_medium

dry_run: setup ## memory per GPU (DDP and FSDP), fit in 80 GB, hours and dollars of every config, without a GPU: media/estimate.md
	$(PY) -m measure.estimate $(SCALE_CONFIGS:%=configs/%.py) --gpus=1,8 --out media/estimate.md

train_gpt2_medium: setup ## GPT-2 medium (350M), GPT-3's recipe, 7.1B tokens: one 80 GB GPU, or torchrun for more
	$(PY) train.py configs/gpt2_medium.py

train_gpt2_large: setup ## GPT-2 large (774M), 15.5B tokens (FINEWEB_NAME=sample-100BT data): one 80 GB GPU or more
	$(PY) train.py configs/gpt2_large.py

train_gpt2_xl: setup ## GPT-2 XL (1.5B), 31B tokens (FINEWEB_NAME=sample-100BT data): 8+ GPUs for its time
	$(PY) train.py configs/gpt2_xl.py

train_modern_medium: setup ## the modern recipe at 350M, 2.2B tokens; target: FineWeb val loss 2.92 (speedrun medium)
	$(PY) train.py configs/modern_medium.py

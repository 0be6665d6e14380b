# The table of contents of the project: `make help` lists every target.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Every target reads GPT-2's tokenizer from this cache; `make setup` guarantees it (tokenizer.py).
export TIKTOKEN_CACHE_DIR ?= $(CURDIR)/.cache/tiktoken
# FineWeb-Edu tokens for the GPU variants: 3.1B to train on (5,722 steps of 524,288) + 0.1B of validation.
FINEWEB_TOKENS ?= 3200000000

.PHONY: help setup setup-dev test demo eval eval_gpt2 variants data_fineweb data_shakespeare bench_prepare \
        train_baseline train_increase_max_lr train_rotational_pos_emb train_swiglu

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-26s %s\n", $$1, $$2}'

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) tokenizer.py
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

setup: $(VENV)/.runtime ## create .venv with the runtime dependencies and GPT-2's tokenizer (offline-ready)

setup-dev: $(VENV)/.dev ## setup, plus the test-only dependencies (pytest, transformers, lm-eval)

test: setup-dev ## run the test suite (CPU, no network)
	$(PY) -m pytest -q tests

# --- data ---------------------------------------------------------------------------------------

data/pydoc/manifest.json: | setup
	@# English prose that ships with Python itself (the text of help() topics): no download needed
	$(PY) -c "import os, pydoc_data.topics as t; os.makedirs('data/pydoc_text', exist_ok=True); \
	[open(f'data/pydoc_text/{k}.txt', 'w').write(v) for k, v in t.topics.items()]"
	$(PY) prepare_data.py --input 'data/pydoc_text/*.txt' --out_dir data/pydoc --prefix pydoc

data_shakespeare: setup ## Tiny Shakespeare from ../shared/data (where it exists) into data/shakespeare
	$(PY) prepare_data.py --input ../shared/data/tinyshakespeare.txt --out_dir data/shakespeare

data_fineweb: setup ## stream FineWeb-Edu (sample-10BT) from Hugging Face into data/fineweb_edu (needs internet)
	$(PY) prepare_data.py --dataset HuggingFaceFW/fineweb-edu --name sample-10BT --out_dir data/fineweb_edu \
		--max_tokens $(FINEWEB_TOKENS)

bench_prepare: data/pydoc/manifest.json ## tokenizer throughput: ours (process pool) next to tiktoken's encode_ordinary_batch
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
	$(PY) bench_sample.py

variants: setup ## print the README's variants table (parameters per config)
	$(PY) variants.py

# --- training -----------------------------------------------------------------------------------

demo: data/pydoc/manifest.json ## CPU, no download: train a tiny GPT for ~3 minutes (re-run resumes), plot media/demo_loss.png
	$(PY) train.py configs/demo_cpu.py
	$(PY) plot.py out/demo_cpu --loss_curve media/demo_loss.png

ABLATION_INPUT ?= ../shared/data/tinyshakespeare.txt
ABLATION_DATA ?= data/shakespeare

ablation_cpu: setup ## every variant at CPU scale, 2 seeds, plus an LR sweep (<1 h on 2 cores): media/ablation_cpu.png/.md
	$(PY) prepare_data.py --input $(ABLATION_INPUT) --out_dir $(ABLATION_DATA)
	$(PY) ablation_cpu.py --data_dir $(ABLATION_DATA)

# the GPU runs: every out/NAME/ with a log, but the CPU demo (its own picture) and the ablation (out/ablation_cpu/*/)
PLOT_RUNS = $(filter-out out/demo_cpu/,$(dir $(wildcard out/*/log.jsonl)))

.PHONY: plots ablation_cpu
plots: setup ## compare the runs in out/ (not the CPU demo): media/convergence_comparison.png, commonsense_qa.png, summary.md/.csv
	$(if $(PLOT_RUNS),$(PY) plot.py $(PLOT_RUNS) --out media/,@echo "no run in out/ has a log.jsonl yet: train one first (make train_baseline, ...)")

train_baseline: setup ## GPT-2 124M, the llm.c/build-nanogpt recipe (needs data_fineweb and a GPU)
	$(PY) train.py configs/baseline.py

train_increase_max_lr: setup ## the baseline with 3x the max learning rate
	$(PY) train.py configs/increase_max_lr.py

train_rotational_pos_emb: setup ## RoPE instead of learned positions, with the increased max LR
	$(PY) train.py configs/rotational_pos_emb.py

train_swiglu: setup ## SwiGLU MLP on top of RoPE and the increased max LR
	$(PY) train.py configs/swiglu.py

.PHONY: train_modern
train_modern: setup ## Muon, QK-norm, ReLU², RMSNorm, untied zero-init head, soft-cap, WSD: 1.0B tokens (muon.py)
	$(PY) train.py configs/modern.py

# --- quantized inference ------------------------------------------------------------------------

QUANT_CKPT ?= out/quant_cpu/ckpt.pt
QUANT_DATA ?= data/shakespeare

.PHONY: train_quant_cpu bench_inference
train_quant_cpu: setup ## the model bench_inference reports on: the modern recipe, 4L 128w, 1024 context, Tiny Shakespeare (~25 min, 2 cores)
	$(PY) prepare_data.py --input $(ABLATION_INPUT) --out_dir $(QUANT_DATA)
	OMP_NUM_THREADS=2 $(PY) train.py configs/quant_cpu.py

bench_inference: setup ## every quantization scheme's quality, speed and memory: media/bench_inference.md (QUANT_CKPT=..., QUANT_DATA=...)
	$(PY) bench_inference.py $(QUANT_CKPT) --data_dir $(QUANT_DATA) --threads 1 --eval_tokens 4096 --compile off
	@# torch.compile takes minutes per scheme on 2 busy cores: speed only, for the reference and the two int8 weight schemes
	$(PY) bench_inference.py $(QUANT_CKPT) --data_dir $(QUANT_DATA) --threads 1 --eval_tokens 0 --compile on \
		--schemes none,int8wo,q8_0 --out media/bench_inference_compile.md

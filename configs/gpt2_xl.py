# GPT-2 XL (1.5B: 48 layers x 1600, 25 heads) in the baseline's recipe, GPT-3's hyperparameters for its 1.3B XL.
# make train_gpt2_xl   (= python train.py configs/gpt2_xl.py); 31B tokens need FineWeb-Edu's sample-100BT:
# make data_fineweb FINEWEB_NAME=sample-100BT FINEWEB_TOKENS=31300000000
# Memory (python estimate.py configs/gpt2_xl.py): about 57 GB per GPU at batch_size 8 under DDP (20 bytes per parameter
# before activations), so ONE 80 GB GPU holds it; FSDP over 8 GPUs brings it to about 30 GB. The time needs 8 or more.
out_dir = "out/gpt2_xl"
n_layer = 48
n_head = 25
n_embd = 1600
total_batch_size = 1048576  # GPT-3 paper table 2.1: 1M tokens per step for its 1.3B model
batch_size = 8  # micro-batch of 8 x 1024 tokens per GPU
max_lr = 2e-4  # GPT-3 paper table 2.1, 1.3B (XL)
warmup_steps = 358  # GPT-3's 375M warmup tokens at 1M tokens per step
max_steps = 29711  # 31.2B tokens: 20 per parameter (1.56B), the compute-optimal ratio of Hoffmann et al. 2022 (Chinchilla)
csqa_data = "hf"  # CommonsenseQA validation from Hugging Face, scored at every eval (the plots read csqa_acc)

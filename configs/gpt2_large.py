# GPT-2 large (774M: 36 layers x 1280, 20 heads) in the baseline's recipe, GPT-3's hyperparameters for its size.
# make train_gpt2_large   (= python train.py configs/gpt2_large.py); 15.5B tokens need FineWeb-Edu's sample-100BT:
# make data_fineweb FINEWEB_NAME=sample-100BT FINEWEB_TOKENS=15600000000
# Memory (python estimate.py configs/gpt2_large.py): about 45 GB per GPU at batch_size 16 under DDP, so ONE 80 GB GPU
# runs it; at 8 GPUs it still takes days (the estimate's hours column).
out_dir = "out/gpt2_large"
n_layer = 36
n_head = 20
n_embd = 1280
total_batch_size = 524288  # GPT-3 paper table 2.1: 0.5M tokens per step for its 760M model
batch_size = 16  # micro-batch of 16 x 1024 tokens per GPU
max_lr = 2.5e-4  # GPT-3 paper table 2.1, 760M
warmup_steps = 715  # GPT-3's 375M warmup tokens, as the baseline
max_steps = 29530  # 15.5B tokens: 20 per parameter (774M), the compute-optimal ratio of Hoffmann et al. 2022 (Chinchilla)
csqa_data = "hf"  # CommonsenseQA validation from Hugging Face, scored at every eval (the plots read csqa_acc)

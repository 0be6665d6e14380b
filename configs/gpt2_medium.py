# GPT-2 medium (350M: 24 layers x 1024, 16 heads) in the baseline's recipe, GPT-3's hyperparameters for its size.
# make train_gpt2_medium   (= python train.py configs/gpt2_medium.py); see the README's "Scaling up" for the table.
# Memory (python estimate.py configs/gpt2_medium.py): about 37 GB per GPU at batch_size 32 under DDP, so ONE 80 GB GPU
# runs it; 8 make it about 8x faster (torchrun --nproc_per_node=8).
out_dir = "out/gpt2_medium"
n_layer = 24
n_head = 16
n_embd = 1024
total_batch_size = 524288  # GPT-3 paper table 2.1: 0.5M tokens per step for its 350M model
batch_size = 32  # micro-batch of 32 x 1024 tokens per GPU
max_lr = 3e-4  # GPT-3 paper table 2.1, 350M
warmup_steps = 715  # GPT-3's 375M warmup tokens, as the baseline
max_steps = 13538  # 7.1B tokens: 20 per parameter (355M), the compute-optimal ratio of Hoffmann et al. 2022 (Chinchilla)
csqa_data = "hf"  # CommonsenseQA validation from Hugging Face, scored at every eval (the plots read csqa_acc)

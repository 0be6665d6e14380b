# SwiGLU MLP (gated SiLU, hidden 2048: same parameter count as GELU's 3072) on top of RoPE and the increased max LR.
# make train_swiglu   (= python train.py configs/swiglu.py)
out_dir = "out/swiglu"
data_dir = "data/fineweb_edu"
pos_emb = "rope"
rope_theta = 10000.0
mlp = "swiglu"
total_batch_size = 524288
batch_size = 64
max_steps = 5722
warmup_steps = 715
max_lr = 1.8e-3
min_lr_ratio = 0.1
lr_schedule = "cosine"
csqa_data = "hf"  # CommonsenseQA validation from Hugging Face, scored at every eval (the plots read csqa_acc)

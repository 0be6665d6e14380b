# Rotary position embeddings (RoFormer) instead of the learned position table, on top of the increased max LR.
# make train_rotational_pos_emb   (= python train.py configs/rotational_pos_emb.py)
out_dir = "out/rotational_pos_emb"
data_dir = "data/fineweb_edu"
pos_emb = "rope"
rope_theta = 10000.0
mlp = "gelu"
total_batch_size = 524288
batch_size = 64
max_steps = 5722
warmup_steps = 715
max_lr = 1.8e-3
min_lr_ratio = 0.1
lr_schedule = "cosine"
csqa_data = "hf"  # CommonsenseQA validation from Hugging Face, scored at every eval (the plots read csqa_acc)

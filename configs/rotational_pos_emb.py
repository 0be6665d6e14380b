# Rotary position embeddings (RoFormer) instead of the learned position table, on top of the increased max LR.
# make train_rotational_pos_emb   (= python train.py configs/rotational_pos_emb.py); every other key as in baseline.py
out_dir = "out/rotational_pos_emb"
pos_emb = "rope"
rope_theta = 10000.0
max_lr = 1.8e-3
csqa_data = "hf"  # CommonsenseQA validation from Hugging Face, scored at every eval (the plots read csqa_acc)

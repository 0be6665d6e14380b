# SwiGLU MLP (gated SiLU, hidden 2048: same parameter count as GELU's 3072) on top of RoPE and the increased max LR.
# make train_swiglu   (= python train.py configs/swiglu.py); every other key as in baseline.py
out_dir = "out/swiglu"
pos_emb = "rope"
mlp = "swiglu"
max_lr = 1.8e-3
csqa_data = "hf"  # CommonsenseQA validation from Hugging Face, scored at every eval (the plots read csqa_acc)

# GPT-2 124M as llm.c and build-nanogpt train it on FineWeb: 524,288 tokens/step, max_lr 6e-4, warmup then cosine to 10%.
# make train_baseline   (= python train.py configs/baseline.py); ~3.0B tokens, the budget GPT-2 quality needs
out_dir = "out/baseline"
data_dir = "data/fineweb_edu"
pos_emb = "learned"
mlp = "gelu"
total_batch_size = 524288
batch_size = 64
max_steps = 5722
warmup_steps = 715
max_lr = 6e-4
min_lr_ratio = 0.1
lr_schedule = "cosine"
csqa_data = "hf"  # CommonsenseQA validation from Hugging Face, scored at every eval (the plots read csqa_acc)

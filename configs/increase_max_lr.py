# The baseline with 3x its max learning rate (1.8e-3): GPT-3's 6e-4 is conservative for a 124M model at this batch size.
# make train_increase_max_lr   (= python train.py configs/increase_max_lr.py)
out_dir = "out/increase_max_lr"
data_dir = "data/fineweb_edu"
pos_emb = "learned"
mlp = "gelu"
total_batch_size = 524288
batch_size = 64
max_steps = 5722
warmup_steps = 715
max_lr = 1.8e-3
min_lr_ratio = 0.1
lr_schedule = "cosine"
csqa_data = "hf"  # CommonsenseQA validation from Hugging Face, scored at every eval (the plots read csqa_acc)

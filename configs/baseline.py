# GPT-2 124M as llm.c and build-nanogpt train it on FineWeb: 524,288 tokens/step, max_lr 6e-4, warmup then cosine to 10%.
# make train_baseline   (= python train.py configs/baseline.py). These are TrainConfig's defaults, spelled out:
# the other configs name only what they change.
out_dir = "out/baseline"
data_dir = "data/fineweb_edu"
pos_emb = "learned"
mlp = "gelu"
total_batch_size = 524288  # GPT-3 paper's 0.5M tokens per step for 125M models
batch_size = 64  # micro-batch of 64 x 1024 tokens: fits an 80 GB H100 in bf16
max_steps = 5722  # 3.0B tokens: about where the seed's runs reach GPT-2 124M's quality
warmup_steps = 715  # build-nanogpt's 375M warmup tokens (GPT-3 paper)
max_lr = 6e-4  # GPT-3 paper's for 125M
min_lr_ratio = 0.1
lr_schedule = "cosine"
csqa_data = "hf"  # CommonsenseQA validation from Hugging Face, scored at every eval (the plots read csqa_acc)

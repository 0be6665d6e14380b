# The baseline with 3x its max learning rate (1.8e-3): GPT-3's 6e-4 is conservative for a 124M model at this batch size.
# make train_increase_max_lr   (= python train.py configs/increase_max_lr.py); every other key as in baseline.py
out_dir = "out/increase_max_lr"
max_lr = 1.8e-3
csqa_data = "hf"  # CommonsenseQA validation from Hugging Face, scored at every eval (the plots read csqa_acc)

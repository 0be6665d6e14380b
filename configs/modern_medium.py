# The modern recipe (configs/modern.py: Muon, RoPE, QK-norm, ReLU², RMSNorm, untied zero-init head, soft-cap, WSD) at GPT-2 medium's shape (24 x 1024).
# make train_modern_medium   (= python train.py configs/modern_medium.py). H100 TARGET (a target, not a result): GPT-2 medium's
# FineWeb validation loss 2.92, which the NanoGPT speedrun's medium track (KellerJordan/modded-nanogpt) reaches in about 2.2B
# tokens. Memory (python estimate.py configs/modern_medium.py): about 56 GB per GPU at batch_size 32 under DDP: ONE 80 GB GPU.
out_dir = "out/modern_medium"
data_dir = "data/fineweb_edu"
n_layer = 24  # GPT-2 medium's shape (the speedrun's medium track: 16 layers x 1024)
n_head = 16
n_embd = 1024
bias = False  # no biases, as modded-nanogpt, nanochat and Llama: Muon orthogonalises matrices, biases would be AdamW's extras
pos_emb = "rope"  # RoFormer (Su et al. 2021), as modded-nanogpt (since its 06/06/24 record) and nanochat
mlp = "relu2"  # ReLU² (So et al. 2021, Primer), "~1-2% better than GELU": modded-nanogpt 10/14/24 record
norm = "rmsnorm"  # RMSNorm (Zhang & Sennrich 2019) in place of LayerNorm: modded-nanogpt 10/14/24 record, nanochat
qk_norm = True  # RMS norm of each head's q and k (Henry et al. 2020; Dehghani et al. 2023): modded-nanogpt 10/14/24 record, nanochat
tie_embeddings = False  # a head of its own: modded-nanogpt 11/03/24 record ("Untied embed and lm_head"), nanochat
zero_init_proj = True  # residual projections and head start at zero ("muP-like"): modded-nanogpt 10/14/24 and 11/03/24 records
logit_softcap = 15.0  # 15 * tanh(logits / 15) (Gemma 2's soft-capping): modded-nanogpt 01/04/25 record (30 -> 15), nanochat
optimizer = "muon"  # Muon for the blocks' matrices (Keller Jordan 2024, kellerjordan.github.io/posts/muon), AdamW for the rest
muon_lr = 0.02  # KellerJordan/Muon's default lr and nanochat's matrix_lr at 768 wide (modded-nanogpt 12/04/24: 0.05)
muon_momentum = 0.95  # Nesterov momentum 0.95: KellerJordan/Muon's default, modded-nanogpt, nanochat
max_lr = 0.0035  # modern.py's 0.004 x (1024/768)^-0.5: nanochat scales its AdamW learning rates by 1/sqrt(width/768)
embedding_lr = 0.17  # modern.py's 0.2 x (1024/768)^-0.5, nanochat's width scaling
beta1 = 0.8  # Adam betas (0.8, 0.95): modded-nanogpt (12/04/24 record) and nanochat
beta2 = 0.95
weight_decay = 0.0  # none, as modded-nanogpt's records and nanochat's base training
lr_schedule = "wsd"  # warmup, constant, linear decay (Hägele et al. 2024, arXiv:2405.18392): modded-nanogpt's trapezoid
warmup_steps = 0  # none, as modded-nanogpt: zero-initialised projections and Muon's normalised steps start gently
wsd_decay_fraction = 0.3  # modded-nanogpt decays over the last 28-39% (1,450 of 5,100 steps on 10/18/24, 560 of 1,440 on 12/04/24)
min_lr_ratio = 0.0  # decay to zero, as modded-nanogpt
total_batch_size = 524288  # the baseline's 2**19 tokens per step; modded-nanogpt's 8 x 64 x 1024 is the same
batch_size = 32  # micro-batch of 32 x 1024 tokens per GPU
max_steps = 4196  # 2.2B tokens: about what the speedrun's medium track needs to reach the target below
csqa_data = "hf"  # CommonsenseQA validation from Hugging Face, scored at every eval (the plots read csqa_acc)

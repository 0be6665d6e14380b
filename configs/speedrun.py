# Modern plus the NanoGPT speedrun's later records: document masking, a growing attention window, U-net value embeddings and skips, Muon momentum warmup.
# Sources: KellerJordan/modded-nanogpt's README table and records/track_1_short (each line below names its record).
# make train_speedrun   (= python train.py configs/speedrun.py); 0.78B tokens (1,480 steps of 524,288)
#
# H100 TARGET (a target, not a measurement: no GPU has run it): FineWeb validation loss <= 3.28 (llm.c's GPT-2 124M)
# within 0.78B tokens, the 12/08/24 record's 1,480 steps x 524,288 tokens for this feature set. That record also had
# 64K-token FlexAttention sequences, embedding skips into every block (x0) and 6 heads of 128, which this config
# lacks, so expect more tokens. Wall time on one H100 SXM: 0.78B tokens x 0.86 GFLOP/token at 40% MFU of
# 989.5 TFLOP/s is about 28 minutes; `python train.py configs/speedrun.py --dry_run` prints it at assumed_mfu,
# and `make bench_gpu` measures the MFU it runs at.
# The records' savings below are wall-time on 8 H100s for the whole record, each measured on top of the ones before.
out_dir = "out/speedrun"
data_dir = "data/fineweb_edu"
n_layer = 12  # the baseline's shapes (GPT-2 124M); modded-nanogpt keeps 12 layers x 768 but uses 6 heads of 128
n_head = 12
n_embd = 768
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
max_lr = 0.004  # AdamW lr of the untied head and the RMSNorm gains: nanochat's unembedding_lr at 768 wide (modded-nanogpt 12/04/24: 0.008)
embedding_lr = 0.2  # AdamW lr of the input embedding: nanochat's embedding_lr at 768 wide (modded-nanogpt 12/04/24: 0.6)
beta1 = 0.8  # Adam betas (0.8, 0.95): modded-nanogpt (12/04/24 record) and nanochat
beta2 = 0.95
weight_decay = 0.0  # none, as modded-nanogpt's records and nanochat's base training
lr_schedule = "wsd"  # warmup, constant, linear decay (Hägele et al. 2024, arXiv:2405.18392): modded-nanogpt's trapezoid
warmup_steps = 0  # none, as modded-nanogpt: zero-initialised projections and Muon's normalised steps start gently
min_lr_ratio = 0.0  # decay to zero, as modded-nanogpt
total_batch_size = 524288  # the baseline's 2**19 tokens per step; modded-nanogpt's 8 x 64 x 1024 is the same
csqa_data = "hf"  # CommonsenseQA validation from Hugging Face, scored at every eval (the plots read csqa_acc)
max_steps = 1480  # 0.78B tokens: the 12/08/24 record's 1,480 steps of 8 x 65,536 tokens
wsd_decay_fraction = 0.4  # the 12/08/24 record: 600 cooldown steps of 1,480
doc_mask = True  # 11/19/24 record (7.2 -> 5.0 min, with 64K-token sequences): no token attends across an <|endoftext|>
block_size = 4096  # longer sequences, as the window makes them affordable: 16 x 4096 = the same 65,536 tokens per micro-batch,
batch_size = 16  # and fewer documents cut at a sequence's edge (the 11/19/24 record trains on one 64K-token sequence per GPU)
attn_window = 1024  # at the end of the run (the 11/19/24 record's window: 1,024 of its 64K tokens)
attn_window_start = 128  # 11/24/24 record (5.0 -> 4.7 min): the window grows linearly during training (there 64 -> 1,792)
value_embeds = True  # 12/04/24 record (4.7 -> 4.4 min) in the 12/08/24 U-net order (4.4 -> 3.95 min, with code tweaks)
unet_skips = True  # 11/10/24 record (7.8 -> 7.2 min, with a doubled lr): block n-1-i adds block i's output, learned weight
muon_momentum_warmup_steps = 300  # 11/06/24 record (10.8 -> 8.2 min with its other changes): momentum 0.85 -> 0.95
# on CUDA the masked attention is FlexAttention's, which skips the blocks outside the window and the document: the cost
# of a 4096-token sequence grows with 4096 x 1024, not 4096^2 (SDPA's boolean mask, the CPU's path, computes them all)

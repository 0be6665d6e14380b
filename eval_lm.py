"""
Any lm-evaluation-harness task on any of our checkpoints (every variant), through a small lm-eval model class.

    python eval_lm.py out/swiglu/ckpt.pt --tasks hellaswag,arc_easy,piqa,winogrande
    python eval_lm.py out/modern/ckpt.pt --tasks lambada_openai,wikitext --limit 200 --batch_size 32
    python eval_lm.py out/demo_cpu/ckpt.pt --tasks my_task --include_path my_tasks/ --device cpu --out results.json
    python eval_lm.py out/quant_cpu/ckpt.pt --tasks arc_easy --limit 100 --device cpu --quant q8_0   # quantize.py first

lm-eval (`pip install lm-eval`, in requirements-dev.txt) is an optional extra: only this script imports it.
GPTLM answers lm-eval's three request types with our model and GPT-2's tokenizer: loglikelihood (the sum of a
continuation's token log-probs and whether greedy decoding would produce it; lm-eval's TemplateLM splits
context and continuation, as for its `hf` model), loglikelihood_rolling (whole-text perplexity over windows of
block_size, lm-eval's own windowing) and generate_until (greedy unless a task asks to sample, with the KV cache,
cut at the task's stop strings). Scores are in float32, as lm-eval's `hf` model scores GPT-2; a checkpoint that
export_hf.py can export gets the same numbers from `lm_eval --model hf` on the export (tests/test_eval_lm.py).
Prints lm-eval's table and writes its results JSON (default: lm_eval_results.json beside the checkpoint).
"""

import argparse
import os
import sys

import torch

from cheapgpt2.checkpoint import add_model_arguments, load_model, model_arguments_error
from cheapgpt2.common import pick_device, write_json_atomic
from cheapgpt2.generate import generate_tokens
from cheapgpt2.model import log_probs
from cheapgpt2.multiple_choice import model_input
from cheapgpt2.quantize import SCHEMES, quantize
from cheapgpt2.tokenizer import EOT_TOKEN, get_encoding


def make_lm_class():
    """GPTLM, defined once lm-eval is importable (its base class comes from lm-eval)."""
    from lm_eval.api.model import TemplateLM
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    class GPTLM(TemplateLM):
        """Our GPT as an lm-eval model: lm_eval.simple_evaluate(model=GPTLM(model, ...), tasks=[...])."""

        def __init__(self, model, batch_size=16, device="cpu", max_gen_toks=256):
            super().__init__()
            self.model = model.to(device).eval()
            self.enc = get_encoding()
            self.batch_size = batch_size
            self.device_name = device
            self.max_gen_toks = max_gen_toks

        @property
        def eot_token_id(self):
            return EOT_TOKEN

        @property
        def max_length(self):
            return self.model.config.block_size

        def tok_encode(self, string, **kwargs):
            # "<|endoftext|>" in a text is the special token, as in transformers' GPT-2 tokenizer
            return self.enc.encode(string, allowed_special="all")

        def tok_decode(self, tokens):
            return self.enc.decode(tokens)

        @torch.no_grad()
        def _loglikelihood_tokens(self, requests, disable_tqdm=False, **kwargs):
            """(sum of log-probs, greedy?) per (key, context tokens, continuation tokens), as lm-eval's HFLM: the last
            block_size + 1 tokens of context + continuation without the very last, in float32."""
            results = []
            for start in range(0, len(requests), self.batch_size):
                batch = requests[start:start + self.batch_size]
                inputs = [model_input(context, continuation, self.max_length) for _, context, continuation in batch]
                idx = torch.zeros((len(inputs), max(len(x) for x in inputs)), dtype=torch.long)
                for row, tokens in enumerate(inputs):  # right padding: causal attention never reads it
                    idx[row, :len(tokens)] = torch.tensor(tokens)
                with torch.autocast(device_type=torch.device(self.device_name).type, enabled=False):
                    logits, _ = self.model(idx.to(self.device_name))
                for row, ((key, _, continuation), tokens) in enumerate(zip(batch, inputs)):
                    positions = slice(len(tokens) - len(continuation), len(tokens))
                    logprobs = log_probs(logits[row, positions])  # (continuation, vocab)
                    target = torch.tensor(continuation, device=logprobs.device)
                    loglikelihood = logprobs.gather(1, target[:, None]).sum().item()
                    greedy = bool((logprobs.argmax(dim=-1) == target).all())
                    results.append((loglikelihood, greedy))
                    if key is not None:
                        self.cache_hook.add_partial("loglikelihood", key, (loglikelihood, greedy))
            return results

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            """The log-likelihood of each whole text: lm-eval's disjoint windows of block_size tokens, the first one
            after <|endoftext|>, each later one conditioned on the tokens before it."""
            out = []
            for (string,) in [request.args for request in requests]:
                windows = [(None, *make_disjoint_window(w)) for w in get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)]
                out.append(sum(ll for ll, _ in self._loglikelihood_tokens(windows)))
            return out

        @torch.no_grad()
        def generate_until(self, requests, disable_tqdm=False):
            """Generated text per (context, generation options): greedy (or sampled when the task says so), the
            context's last block_size - max_gen_toks tokens as lm-eval's HFLM keeps, cut at the first stop string."""
            out = []
            eot_text = self.enc.decode([EOT_TOKEN])
            for context, gen_kwargs in [request.args for request in requests]:
                kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
                until = handle_stop_sequences(kwargs.pop("until", None), eos=eot_text)
                max_gen_toks = kwargs.pop("max_gen_toks")
                if max_gen_toks >= self.max_length:
                    raise ValueError(f"a task asks for {max_gen_toks} new tokens, more than the model's context of {self.max_length}")
                temperature = kwargs.get("temperature", 0.0) if kwargs.get("do_sample") else 0.0
                tokens = self.tok_encode(context)[-(self.max_length - max_gen_toks):]
                idx = torch.tensor([tokens], device=self.device_name)
                generated = []
                for token in generate_tokens(self.model, idx, max_gen_toks, temperature=temperature):
                    generated.append(token.item())
                    text = self.tok_decode(generated)
                    if any(stop in text for stop in until if stop):
                        break
                text = postprocess_generated_text(self.tok_decode(generated), stop=until, think_end_token=None)
                out.append(text)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            return out

    return GPTLM


def task_manager_for(include_path):
    """lm-eval's index of its tasks and those in include_path (it reads every task yaml: seconds)."""
    from lm_eval.tasks import TaskManager
    return TaskManager(include_path=include_path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, "score")
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval task names: hellaswag,arc_easy,piqa,winogrande,...")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N documents of each task, for a quick run")
    parser.add_argument("--num_fewshot", type=int, default=None, help="few-shot examples per prompt (default: each task's own, mostly 0)")
    parser.add_argument("--batch_size", type=int, default=16, help="requests per forward pass (default 16)")
    parser.add_argument("--device", default="auto", help="cuda, cpu, mps, ...; auto (default): cuda when available, else cpu")
    parser.add_argument("--include_path", metavar="DIR", help="a folder of extra task yamls (your own tasks, or local copies of the data)")
    parser.add_argument("--out", metavar="PATH", help="results JSON (default: lm_eval_results.json beside the checkpoint)")
    parser.add_argument("--quant", default="none", metavar="SCHEME", help=f"score the model quantized by quantize.py (CPU): {', '.join(SCHEMES)} (default none)")
    args = parser.parse_args(argv)

    if error := model_arguments_error(args):
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        import lm_eval
        from lm_eval.utils import make_table
    except ImportError:
        print("error: lm-evaluation-harness is not installed; pip install 'lm-eval>=0.4.13' (or -r requirements-dev.txt)", file=sys.stderr)
        return 1
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)) if args.checkpoint else ".",
                                   "lm_eval_results.json")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        if not tasks:
            raise ValueError("--tasks is empty; name at least one lm-eval task (hellaswag, arc_easy, ...)")
        if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
            raise ValueError("--batch_size and --limit must be positive")
        if args.include_path and not os.path.isdir(args.include_path):
            raise FileNotFoundError(f"--include_path {args.include_path} is not a folder of task yamls")
        from cheapgpt2.common import check_writable
        check_writable(out)
        task_manager = task_manager_for(args.include_path)
        unknown = [t for t in tasks if t not in task_manager.all_tasks]
        if unknown:
            raise ValueError(f"lm-eval has no task {', '.join(unknown)}; `lm_eval --tasks list` lists them")
        device = pick_device(args.device)
        if args.quant != "none" and device != "cpu":
            raise ValueError(f"--quant {args.quant} runs on the CPU: pass --device cpu")
        model = quantize(load_model(args.checkpoint, args.hf, device), args.quant)
        lm = make_lm_class()(model, batch_size=args.batch_size, device=device)
        results = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=args.num_fewshot, limit=args.limit,
                                          task_manager=task_manager)
        print(make_table(results))
        print(f"wrote {write_json_atomic(results, out)}")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

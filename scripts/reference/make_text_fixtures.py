#!/usr/bin/env python3
"""Reference fixtures for the nanbeige-text crate: token ids and rendered chat templates.

What it writes (all under tests/fixtures/):
  spm/tokenizer.json, spm/tokenizer_config.json  a tiny SentencePiece-BPE tokenizer with byte fallback,
                                                  shaped like Nanbeige4.1-3B's (Metaspace, <0x00>..<0xFF>
                                                  at ids 3..258, ChatML + <think>/<tool_call> added tokens)
  spm/spm-vocab.gguf                              the same vocabulary as GGUF metadata (tokenizer.ggml.model
                                                  = llama: tokens, scores, token types), plus a tiny tensor set
  tokenizer/{smollm2,qwen2,spm,spm_gguf}.json     ids/decoded text from transformers for a fixed text set
  templates/{nanbeige,smollm2,qwen2}.jinja/.json  templates and their renderings by apply_chat_template
  templates/features.json                         small templates probing jinja2 features, rendered by
                                                  transformers' own jinja environment

What it does not do: download anything. It reads the real GGUF test models from
${NANBEIGE_CACHE:-~/.cache/nanbeige}/models (`nanbeige pull all` puts them there) and trains the small
SentencePiece model on the licence texts in /usr/share/common-licenses plus the multilingual lines below.

Run it in the reference venv (transformers, tokenizers, sentencepiece, gguf, torch, jinja2):
    python scripts/reference/make_text_fixtures.py
The committed fixtures were made with transformers 5.24.0, tokenizers 0.23.3, sentencepiece 0.2.3,
gguf 0.19.0, jinja2 3.1.6; each tokenizer fixture records the versions it was made with.
"""

import glob
import json
import os
import shutil
import sys
import tempfile

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
CACHE = os.environ.get("NANBEIGE_CACHE", os.path.expanduser("~/.cache/nanbeige"))
MODELS = os.path.join(CACHE, "models")
# Nanbeige4.1-3B's template: the shared copy if present, else the one committed beside the fixtures.
NANBEIGE_TEMPLATE = os.environ.get("NANBEIGE_TEMPLATE") or next(
    p for p in [os.path.join(ROOT, "..", "shared", "nanbeige", "chat_template.jinja"),
                os.path.join(FIX, "templates", "nanbeige.jinja")] if os.path.exists(p)
)

GGUFS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2": "Qwen2.5-Coder-0.5B-Instruct.gguf",
}

# Nanbeige4.1-3B's added tokens: ChatML control tokens are special, the reasoning/tool tags are not
# (so they survive skip_special_tokens).
SPM_ADDED = [
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|endoftext|>", True),
    ("<think>", False),
    ("</think>", False),
    ("<tool_call>", False),
    ("</tool_call>", False),
]

# Extra training text so the tiny vocabulary has some CJK/accented pieces and not only byte fallback.
MULTILINGUAL = """你好，世界！今天天气很好，我们去公园散步吧。
南北阁是一款由BOSS直聘自主研发并训练的专业大语言模型。你是一位工具函数调用专家。
日本語のテキストです。ひらがな、カタカナ、漢字を含みます。
Café naïve résumé façade. São Paulo. Ångström.
def main():
    for i in range(10):
        print(i)
fn main() {
    let x = 1;
}
"""

TEXTS = [
    "Hello, world! This is a simple English sentence.",
    "The quick brown fox jumps over the lazy dog. It's 3:45 p.m. on Jan. 2nd, 2024.",
    "你好，世界！今天天气很好，我们去公园散步吧。",
    "南北阁是一款由BOSS直聘自主研发并训练的专业大语言模型。",
    "日本語のテキストです。ひらがな、カタカナ、漢字を含みます。",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).collect();\n\tprintln!(\"{:?}\", v);\n}\n",
    "Emoji: 😀🎉👍🏽 family 👨\u200d👩\u200d👧\u200d👦 flag 🇫🇷 heart ❤️ rainbow 🏳️\u200d🌈",
    "a  b   c    d     e",
    "\t\ttabs\tand\ttabs\t",
    "line1\n\n\nline2\n",
    "trailing spaces   ",
    "   leading spaces",
    "1234567890 3.14159 -42 1,000,000 2^64=18446744073709551616 in 2024",
    "I'LL DON'T you're we've she'd THEY'RE it's",
    "don't can't won't I'm y'all",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<think>\nLet me think.\n</think>\n\nThe answer is 4.",
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
    "",
    " ",
    "\n",
    "    ",
    "Café naïve résumé façade Ångström Øresund São Paulo Dvořák",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "Mixed: English 中文 日本語 العربية 한국어 Русский Ελληνικά",
    "URL https://example.com/path?q=1&r=two#frag and email a.b@c.de",
    "<|endoftext|>",
    "<|im_start|><|im_end|>",
    "x<think>y</think>z",
    "Combining: e\u0301 n\u0303 zero\u200bwidth\u00a0nbsp",
    "Math: ∑_{i=1}^{n} i² = n(n+1)/2 ≤ ∞ → α β γ ½",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n   spaced   <|im_end|>",
    "replacement char \ufffd here",
    "Control\x01chars\x7f and \r\n windows line ends\r\n",
]


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", os.path.relpath(path, ROOT))


SMOLLM_NOTE = (
    "transformers' GGUF loader does not know tokenizer.ggml.pre = 'smollm' and splits text with the GPT-2 rules "
    "only; SmolLM2's own tokenizer.json (and llama.cpp) first isolate every digit (\\p{N}). These ids use the "
    "model's own pre-tokenizer; transformers_gguf_differs lists the texts where stock transformers gives other ids."
)


def use_smollm_pre_tokenizer(tok):
    """SmolLM2's tokenizer.json pre-tokenizer: each digit alone, then GPT-2 byte-level splitting."""
    from tokenizers import pre_tokenizers

    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)]
    )


def token_fixture(tok):
    ids = [tok.encode(t, add_special_tokens=False) for t in TEXTS]
    return {
        "texts": TEXTS,
        "add_special_tokens": False,
        "ids": ids,
        "decoded": [tok.decode(i, skip_special_tokens=False) for i in ids],
        "decoded_skip_special": [tok.decode(i, skip_special_tokens=True) for i in ids],
        # A few texts with add_special_tokens=True, to pin BOS/EOS handling.
        "ids_add_special": [tok.encode(t, add_special_tokens=True) for t in TEXTS[:3]],
        "vocab_size": len(tok),
        "added_tokens": [[i, t.content, t.special] for i, t in sorted(tok.added_tokens_decoder.items())],
        "bos_token": tok.bos_token,
        "eos_token": tok.eos_token,
        "made_with": versions(),
    }


def versions():
    import jinja2
    import tokenizers
    import transformers

    return {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__, "jinja2": jinja2.__version__}


# ---------------------------------------------------------------------------------------------------
# SentencePiece tokenizer (Nanbeige-like) and its GGUF twin
# ---------------------------------------------------------------------------------------------------


def train_spm(workdir):
    import sentencepiece as spm

    corpus = os.path.join(workdir, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as out:
        for path in sorted(glob.glob("/usr/share/common-licenses/*")):
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, encoding="utf-8", errors="ignore") as f:
                    out.write(f.read())
        for _ in range(20):
            out.write(MULTILINGUAL)
    prefix = os.path.join(workdir, "spm")
    spm.SentencePieceTrainer.train(
        input=corpus,
        model_prefix=prefix,
        model_type="bpe",
        vocab_size=1200,
        byte_fallback=True,
        character_coverage=0.9995,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        max_sentence_length=100000,
        minloglevel=2,
    )
    return prefix + ".model"


def make_spm_dir(model_file, template):
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    out = os.path.join(FIX, "spm")
    os.makedirs(out, exist_ok=True)
    # transformers converts a tokenizer.model into a tokenizers backend when it loads a directory holding one.
    src = tempfile.mkdtemp()
    shutil.copy(model_file, os.path.join(src, "tokenizer.model"))
    with open(os.path.join(src, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "legacy": False, "add_bos_token": True}, f)
    tok = AutoTokenizer.from_pretrained(src)
    tok.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in SPM_ADDED])
    tmp = tempfile.mkdtemp()
    tok.save_pretrained(tmp)
    shutil.copy(os.path.join(tmp, "tokenizer.json"), os.path.join(out, "tokenizer.json"))
    # A tokenizer_config.json in the shape of Nanbeige's: <|im_start|> is BOS, <|im_end|> EOS, <unk> pads.
    vocab = json.loads(tok.backend_tokenizer.to_str())["model"]["vocab"]
    added = {}
    for name in ["<unk>", "<s>", "</s>"]:
        added[str(vocab[name])] = {"content": name, "lstrip": False, "normalized": False, "rstrip": False,
                                   "single_word": False, "special": True}
    for t, s in SPM_ADDED:
        added[str(tok.convert_tokens_to_ids(t))] = {"content": t, "lstrip": False, "normalized": False,
                                                     "rstrip": False, "single_word": False, "special": s}
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "bos_token": "<|im_start|>",
        "chat_template": template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "legacy": False,
        "model_max_length": 262144,
        "pad_token": "<unk>",
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
    }
    write_json(os.path.join(out, "tokenizer_config.json"), config)
    print("wrote", os.path.relpath(os.path.join(out, "tokenizer.json"), ROOT))
    return out


def make_spm_gguf(model_file, spm_dir, template):
    """Write the vocabulary the way llama.cpp's converter does for a SentencePiece model with added tokens."""
    import gguf
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model_file)
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(gguf.TokenType.CONTROL)
        elif sp.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        elif sp.is_unused(i):
            types.append(gguf.TokenType.UNUSED)
        else:
            types.append(gguf.TokenType.NORMAL)
    for t, special in SPM_ADDED:
        tokens.append(t)
        scores.append(-1000.0)
        types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)

    n_vocab, hidden, inter, heads = len(tokens), 16, 32, 2
    path = os.path.join(spm_dir, "spm-vocab.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("spm-vocab-fixture")
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_block_count(1)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_rope_dimension_count(hidden // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(tokens.index("<|im_start|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_unk_token_id(0)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.add_chat_template(template)
    # A tiny LlamaForCausalLM tensor set so tools that insist on tensors can open the file.
    rng = np.random.default_rng(0)
    f32 = lambda *s: (rng.standard_normal(s) * 0.02).astype(np.float32)
    w.add_tensor("token_embd.weight", f32(n_vocab, hidden))
    w.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    w.add_tensor("output.weight", f32(n_vocab, hidden))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(hidden, dtype=np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
    for name in ["attn_q", "attn_k", "attn_v", "attn_output"]:
        w.add_tensor(f"blk.0.{name}.weight", f32(hidden, hidden))
    w.add_tensor("blk.0.ffn_gate.weight", f32(inter, hidden))
    w.add_tensor("blk.0.ffn_up.weight", f32(inter, hidden))
    w.add_tensor("blk.0.ffn_down.weight", f32(hidden, inter))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", os.path.relpath(path, ROOT))
    return path


# ---------------------------------------------------------------------------------------------------
# Chat templates
# ---------------------------------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city. Returns <b>temperature</b> & 'humidity' — 天气",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. \"Paris\" or 北京"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "precision": {"type": "number", "default": 0.5},
                "verbose": {"type": "boolean", "default": False},
                "tags": {"type": "array", "items": {"type": "string"}, "default": None},
            },
            "required": ["city"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web.\nLine two with a tab\tand backslash \\ and control \u0001.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}


def conversations(name):
    """(case name, messages, tools, add_generation_prompt, extra)"""
    u = lambda c: {"role": "user", "content": c}
    a = lambda c, **kw: {"role": "assistant", "content": c, **kw}
    cases = [
        ("single_user", [u("Hello!")], None, True, None),
        ("system_user", [{"role": "system", "content": "You are a terse assistant."}, u("What is 2+2?")], None, True, None),
        ("multi_turn", [u("Hi"), a("Hello! How can I help?"), u("Tell me a joke."), a("Why did the chicken cross the road?"), u("Why?")], None, True, None),
        ("last_assistant_no_prompt", [u("Say hi"), a("hi")], None, False, None),
        ("reasoning_content_history", [u("What is 2+2?"), a("4", reasoning_content="Simple arithmetic: 2+2=4."), u("And 3+3?")], None, True, None),
        ("reasoning_content_last", [u("What is 2+2?"), a("4", reasoning_content="\nSimple arithmetic.\n")], None, False, None),
        ("think_in_content", [u("Plan a trip"), a("<think>\nThink about Paris.\n</think>\n\nGo to Paris.")], None, False, None),
        ("think_in_content_history", [u("Plan a trip"), a("<think>\nThink about Paris.\n</think>\n\nGo to Paris."), u("Thanks")], None, True, None),
        ("chinese", [{"role": "system", "content": "你是一个乐于助人的助手。"}, u("你好！请介绍一下北京。"), a("北京是中国的首都。"), u("谢谢 <b>&'\"")], None, True, None),
        ("tools_object_args", [
            u("What's the weather in Paris and Berlin?"),
            a("", tool_calls=[
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Berlin", "days": 2, "precision": 0.1, "verbose": True, "tags": None}}},
            ]),
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temp\": 21}"},
            {"role": "tool", "tool_call_id": "call_2", "name": "get_weather", "content": "{\"temp\": 17}"},
        ], [WEATHER_TOOL, SEARCH_TOOL], True, None),
        ("tools_string_args", [
            {"role": "system", "content": "Use tools when needed."},
            u("Search for rust"),
            a("I'll search.", tool_calls=[{"type": "function", "function": {"name": "search", "arguments": "{\"query\": \"rust <lang> & 'co'\"}"}}]),
            {"role": "tool", "content": "Rust is a language."},
            a("Rust is a language."),
            u("Thanks"),
        ], [SEARCH_TOOL], True, None),
        ("tools_no_calls", [u("Hi")], [WEATHER_TOOL], True, None),
        ("tool_call_content_null", [
            u("Weather in 北京?"),
            {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "北京"}}}]},
            {"role": "tool", "content": "晴"},
        ], [WEATHER_TOOL], True, None),
    ]
    if name == "nanbeige":
        cases += [
            ("content_list", [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], None, True, None),
            ("keep_all_think", [u("Q1"), a("A1", reasoning_content="R1"), u("Q2"), a("A2", reasoning_content="R2")], None, False, {"keep_all_think": True}),
            ("extra_enable_thinking", [u("Q")], None, True, {"enable_thinking": False}),
            ("multi_step_tool_reasoning", [
                u("Find it"),
                a("", reasoning_content="need search", tool_calls=[{"type": "function", "function": {"name": "search", "arguments": {"query": "it"}}}]),
                {"role": "tool", "content": "found"},
                a("Here it is.", reasoning_content="done"),
            ], [SEARCH_TOOL], False, None),
            ("second_system", [{"role": "system", "content": "S1"}, u("Q"), {"role": "system", "content": "S2"}, u("Q2")], None, True, None),
            ("reasoning_alias", [u("Q"), {"role": "assistant", "content": "A", "reasoning": "via reasoning key"}], None, False, None),
        ]
    return cases


def template_fixture(name, tok, template_src):
    out = []
    for case, messages, tools, agp, extra in conversations(name):
        entry = {"name": case, "messages": messages, "tools": tools, "add_generation_prompt": agp, "extra": extra,
                 "bos_token": tok.bos_token, "eos_token": tok.eos_token}
        try:
            entry["rendered"] = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=agp, tokenize=False,
                                                        chat_template=template_src, **(extra or {}))
        except Exception as e:  # the template (or jinja) refused this conversation
            entry["rendered"] = None
            entry["error"] = f"{type(e).__name__}: {e}"
        out.append(entry)
    return out


# Small templates exercising the jinja2 features real chat templates use, rendered by transformers'
# own jinja environment (render_jinja_template); each is checked byte for byte.
FEATURE_MESSAGES = [
    {"role": "system", "content": "  Be brief.  "},
    {"role": "user", "content": "Hi <there> & 'you'"},
    {"role": "assistant", "content": "Hello!", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"b": 2, "a": [1.5, None, True]}}}]},
    {"role": "user", "content": "中文 ok"},
]
FEATURES = [
    ("tojson_variants", "{{ tools | tojson }}\n{{ tools | tojson(indent=2) }}\n{{ tools | tojson(indent='\t', sort_keys=true) }}\n{{ tools[0] | tojson(separators=(',', ':')) }}\n{{ messages[1].content | tojson(ensure_ascii=true) }}|{{ messages[3].content | tojson(ensure_ascii=true) }}|{{ {} | tojson(indent=2) }}|{{ [] | tojson(indent=2) }}"),
    ("python_printing", "{{ none }}|{{ true }}|{{ false }}|{{ 1.0 }}|{{ 2.5e-7 }}|{{ 10**20 }}|{{ messages[2].tool_calls[0].function.arguments }}|{{ messages[2].tool_calls }}|{{ [1, 'a', none] }}|{{ messages[0].missing }}|{{ (1, 2) | list }}"),
    ("string_methods", "{% for m in messages %}{{ m.content.strip() }}|{{ m.content.split(' ')[0] }}|{{ m.content.upper() }}|{{ m.content.lower() }}|{{ m.content.replace('o', '0') }}|{{ m.content.startswith('Hi') }}|{{ m.content.endswith('!') }}|{{ m.content | trim }}|{{ m.content | length }}|{{ m.role.title() }}|{{ m.role.capitalize() }}|{{ m.content.lstrip(' B') }}|{{ m.content.rstrip(' .') }}\n{% endfor %}"),
    ("filters", "{{ messages | map(attribute='role') | join(',') }}|{{ messages | selectattr('role', 'equalto', 'user') | list | length }}|{{ messages | first | attr('role') }}|{{ (messages | last).role }}|{{ messages[0].nope | default('dflt') }}|{{ 3 | string }}|{{ messages | length }}|{{ messages[::-1][0].role }}|{{ messages[1:] | length }}|{{ messages[:-1] | length }}|{{ 'x' ~ 1 ~ 'y' }}|{{ 7 // 2 }}|{{ 7 % 3 }}|{{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='role') | list }}"),
    ("loops_and_tests", "{%- set ns = namespace(n=0, last='') %}\n{%- for m in messages %}\n    {%- if m.role == 'system' %}{% continue %}{% endif %}\n    {%- set ns.n = ns.n + 1 %}\n    {%- set ns.last = m.role %}\n    {{- loop.index }}:{{ loop.index0 }}:{{ loop.first }}:{{ loop.last }}:{{ loop.length }}:{{ m.role }}\n    {%- if m.tool_calls is defined %} calls={{ m.tool_calls | length }}{% endif %}\n    {%- if m.content is string %} s{% endif %}{% if m.tool_calls is not defined %} nd{% endif %}\n    {%- if m.role == 'assistant' %}{% break %}{% endif %}\n{% endfor %}\n{{ ns.n }} {{ ns.last }} {{ 'user' in messages | map(attribute='role') | list }} {{ messages[0] is mapping }} {{ none is none }} {{ tools is none }} {{ 'a' in 'cat' }}"),
    ("whitespace_control", "{% for m in messages %}\n    {% if m.role == 'user' %}\n        [{{ m.content }}]\n    {% else %}\n        <{{ m.role }}>\n    {% endif %}\n    {# a comment #}\n{% endfor %}\n  {%- if add_generation_prompt %}\nGO\n  {% endif %}\ntail\n"),
    ("macros_and_dicts", "{% macro show(m, sep=': ') %}{{ m.role }}{{ sep }}{{ m.content }}{% endmacro %}{% for m in messages %}{{ show(m) }};{% endfor %}{% for k, v in messages[2].tool_calls[0].function.arguments.items() %}{{ k }}={{ v }},{% endfor %}{{ messages[2].get('content') }}|{{ messages[2].get('nothing', 'none!') }}|{{ messages[2].tool_calls[0].function.arguments.keys() | list }}|{{ dict(a=1, b='x') | tojson }}"),
    ("special_tokens_and_extra", "{{ bos_token }}{% for m in messages %}{{ m.role }}{{ eos_token }}{% endfor %}{% if enable_thinking is defined and not enable_thinking %}NOTHINK{% endif %}{{ custom.x }}"),
    ("raises", "{% for m in messages %}{% if m.role == 'assistant' %}{{ raise_exception('assistant turns are not allowed: ' ~ m.content) }}{% endif %}{% endfor %}"),
    ("strftime", "{{ strftime_now('%Y') | length }}"),
]


def feature_fixture():
    from transformers.utils.chat_template_utils import render_jinja_template

    tools = [WEATHER_TOOL]
    out = []
    for name, src in FEATURES:
        extra = {"bos_token": "<s>", "eos_token": "</s>", "enable_thinking": False, "custom": {"x": "X"}}
        entry = {"name": name, "template": src, "messages": FEATURE_MESSAGES, "tools": tools,
                 "add_generation_prompt": True, "bos_token": "<s>", "eos_token": "</s>",
                 "extra": {"enable_thinking": False, "custom": {"x": "X"}}}
        try:
            rendered, _ = render_jinja_template(conversations=[FEATURE_MESSAGES], tools=tools, chat_template=src,
                                                add_generation_prompt=True, **extra)
            entry["rendered"] = rendered[0]
        except Exception as e:
            entry["rendered"] = None
            entry["error"] = f"{type(e).__name__}: {e}"
        out.append(entry)
    return out


def main():
    from transformers import AutoTokenizer

    for f in GGUFS.values():
        if not os.path.exists(os.path.join(MODELS, f)):
            sys.exit(f"missing {MODELS}/{f}: run `nanbeige pull all` first")
    with open(NANBEIGE_TEMPLATE, encoding="utf-8") as f:
        nanbeige_template = f.read()
    tdir = os.path.join(FIX, "templates")
    os.makedirs(tdir, exist_ok=True)
    with open(os.path.join(tdir, "nanbeige.jinja"), "w", encoding="utf-8") as f:
        f.write(nanbeige_template)

    work = tempfile.mkdtemp()
    model_file = train_spm(work)
    spm_dir = make_spm_dir(model_file, nanbeige_template)
    make_spm_gguf(model_file, spm_dir, nanbeige_template)

    spm_tok = AutoTokenizer.from_pretrained(spm_dir)
    write_json(os.path.join(FIX, "tokenizer", "spm.json"), token_fixture(spm_tok))
    spm_gguf_tok = AutoTokenizer.from_pretrained(spm_dir, gguf_file="spm-vocab.gguf")
    write_json(os.path.join(FIX, "tokenizer", "spm_gguf.json"), token_fixture(spm_gguf_tok))
    write_json(os.path.join(tdir, "nanbeige.json"), template_fixture("nanbeige", spm_tok, nanbeige_template))

    for name, f in GGUFS.items():
        tok = AutoTokenizer.from_pretrained(MODELS, gguf_file=f)
        stock = None
        if name == "smollm2":
            stock = token_fixture(tok)
            use_smollm_pre_tokenizer(tok)
        fx = token_fixture(tok)
        if stock is not None:
            fx["note"] = SMOLLM_NOTE
            fx["transformers_gguf_differs"] = [
                {"text": t, "ids": a} for t, a, b in zip(TEXTS, stock["ids"], fx["ids"]) if a != b
            ]
        write_json(os.path.join(FIX, "tokenizer", f"{name}.json"), fx)
        with open(os.path.join(tdir, f"{name}.jinja"), "w", encoding="utf-8") as fh:
            fh.write(tok.chat_template)
        write_json(os.path.join(tdir, f"{name}.json"), template_fixture(name, tok, tok.chat_template))
    write_json(os.path.join(tdir, "features.json"), feature_fixture())
    shutil.rmtree(work)


if __name__ == "__main__":
    main()

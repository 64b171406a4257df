//! The tensor list of a Llama-family checkpoint for a given config: HF and llama.cpp names, shapes,
//! roles, in the order HF's state dict has them. Both writers walk this list, so the HF and GGUF
//! outputs of one seed hold the same values under the two naming schemes.
//! Not here: values (rng.rs) or file layouts (hf.rs, gguf.rs).

use crate::config::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Embed,
    Norm,
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
    /// q/k/v/o or MLP bias; `of` is the matrix it belongs to.
    Bias {
        of: BiasOf,
    },
    LmHead,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasOf {
    Q,
    K,
    Other,
}

#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub hf_name: String,
    pub gguf_name: String,
    /// Row-major (rows, cols) for matrices, (n,) for norms and biases.
    pub shape: Vec<usize>,
    pub role: Role,
    /// Block index, for per-layer quantization rules.
    pub layer: Option<usize>,
}

impl TensorSpec {
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// Initial values: matrices and biases around 0 (std 0.02, transformers' init), norms around 1.
    pub fn mean_std(&self) -> (f32, f32) {
        match self.role {
            Role::Norm => (1.0, 0.02),
            _ => (0.0, 0.02),
        }
    }
}

fn spec(hf: String, gguf: String, shape: Vec<usize>, role: Role, layer: Option<usize>) -> TensorSpec {
    TensorSpec { hf_name: hf, gguf_name: gguf, shape, role, layer }
}

pub fn tensors(cfg: &Config) -> Vec<TensorSpec> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q_out, kv_out) = (cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim);
    let mut out =
        vec![spec("model.embed_tokens.weight".into(), "token_embd.weight".into(), vec![v, h], Role::Embed, None)];
    for l in 0..cfg.num_layers {
        let hf = |m: &str, k: &str| format!("model.layers.{l}.{m}.{k}");
        let gg = |m: &str, k: &str| format!("blk.{l}.{m}.{k}");
        let mut matrix = |hf_m: &str, gg_m: &str, rows: usize, cols: usize, role: Role, bias: Option<BiasOf>| {
            out.push(spec(hf(hf_m, "weight"), gg(gg_m, "weight"), vec![rows, cols], role, Some(l)));
            if let Some(of) = bias {
                out.push(spec(hf(hf_m, "bias"), gg(gg_m, "bias"), vec![rows], Role::Bias { of }, Some(l)));
            }
        };
        let qkv = |of| cfg.qkv_bias.then_some(of);
        let mlp = cfg.mlp_bias.then_some(BiasOf::Other);
        matrix("self_attn.q_proj", "attn_q", q_out, h, Role::Q, qkv(BiasOf::Q));
        matrix("self_attn.k_proj", "attn_k", kv_out, h, Role::K, qkv(BiasOf::K));
        matrix("self_attn.v_proj", "attn_v", kv_out, h, Role::V, qkv(BiasOf::Other));
        matrix("self_attn.o_proj", "attn_output", h, q_out, Role::O, cfg.o_bias.then_some(BiasOf::Other));
        matrix("mlp.gate_proj", "ffn_gate", i, h, Role::Gate, mlp);
        matrix("mlp.up_proj", "ffn_up", i, h, Role::Up, mlp);
        matrix("mlp.down_proj", "ffn_down", h, i, Role::Down, mlp);
        out.push(spec(hf("input_layernorm", "weight"), gg("attn_norm", "weight"), vec![h], Role::Norm, Some(l)));
        out.push(spec(
            hf("post_attention_layernorm", "weight"),
            gg("ffn_norm", "weight"),
            vec![h],
            Role::Norm,
            Some(l),
        ));
    }
    out.push(spec("model.norm.weight".into(), "output_norm.weight".into(), vec![h], Role::Norm, None));
    if !cfg.tie_word_embeddings {
        out.push(spec("lm_head.weight".into(), "output.weight".into(), vec![v, h], Role::LmHead, None));
    }
    out
}

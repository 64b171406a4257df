//! Key/value cache of one sequence, stored as f32 or as int8.
//!
//! f32 (the default) keeps per layer a (1, kv_heads, capacity, head_dim) tensor pair that grows by
//! doubling; prefill attention reads it in place and results match the float reference exactly.
//! q8 keeps each (position, kv head) row as int8 with one f32 scale: a quarter of the memory, and
//! a quarter of the bytes a decode step reads, which is what bounds decode at long context (at 32K
//! tokens the f32 cache of a Nanbeige4.1-3B is 4.3 GB, more than its Q4_0 weights). Decode attends
//! straight from either store (attention.rs); prefill and chunked prompts read a q8 cache
//! dequantized. Autograd never sees a cache: training runs without one.

use crate::attention::{self, F32Rows, Q8Rows};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

/// How the cache stores keys and values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    #[default]
    F32,
    Q8,
}

impl std::str::FromStr for KvType {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "q8" | "q8_0" | "int8" => Ok(Self::Q8),
            _ => bail!("unknown KV cache type `{s}` (expected f32 or q8)"),
        }
    }
}

impl KvType {
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Q8 => "q8",
        }
    }
    /// Bytes one cached token takes per layer.
    pub fn bytes_per_token_layer(self, kv_heads: usize, head_dim: usize) -> usize {
        match self {
            Self::F32 => 2 * kv_heads * head_dim * 4,
            Self::Q8 => 2 * kv_heads * (head_dim + 4),
        }
    }
}

/// int8 rows, position-major: row `pos * kv_heads + head` holds `head_dim` values and one scale,
/// so appending a token is a push and a decode step streams memory in order.
#[derive(Clone, Default)]
struct Q8Store {
    data: Vec<i8>,
    scale: Vec<f32>,
}

impl Q8Store {
    fn truncate_rows(&mut self, rows: usize, hd: usize) {
        self.data.truncate(rows * hd);
        self.scale.truncate(rows);
    }

    fn push_row(&mut self, x: &[f32]) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        self.data.extend(x.iter().map(|v| (v * inv).round() as i8));
        self.scale.push(scale);
    }

    /// The first `t` positions as f32, laid out (1, nkv, t, hd) for the tensor attention path.
    fn dequantize(&self, t: usize, nkv: usize, hd: usize) -> Result<Tensor> {
        let mut out = vec![0f32; nkv * t * hd];
        for i in 0..t {
            for g in 0..nkv {
                let r = i * nkv + g;
                let s = self.scale[r];
                let dst = &mut out[(g * t + i) * hd..(g * t + i + 1) * hd];
                for (o, q) in dst.iter_mut().zip(&self.data[r * hd..(r + 1) * hd]) {
                    *o = *q as f32 * s;
                }
            }
        }
        Ok(Tensor::from_vec(out, (1, nkv, t, hd), &Device::Cpu)?)
    }

    fn rows(&self, nkv: usize, hd: usize) -> Q8Rows<'_> {
        Q8Rows { data: &self.data, scale: &self.scale, nkv, hd }
    }
}

#[derive(Clone)]
enum LayerKv {
    F32 { k: Tensor, v: Tensor },
    Q8 { k: Q8Store, v: Q8Store },
}

#[derive(Clone)]
pub struct Cache {
    layers: Vec<Option<LayerKv>>,
    pub(crate) len: usize,
    pub(crate) max_len: usize,
    kind: KvType,
}

impl Cache {
    pub(crate) fn new(num_layers: usize, max_len: usize, kind: KvType) -> Self {
        Self { layers: vec![None; num_layers], len: 0, max_len, kind }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn max_len(&self) -> usize {
        self.max_len
    }
    pub fn kind(&self) -> KvType {
        self.kind
    }
    pub fn reset(&mut self) {
        self.len = 0;
    }
    /// Forget everything after the first `n` positions (prefix reuse).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    /// A new cache holding a copy of the first `n` positions (storage of its own: writing to one
    /// never changes the other). Copying a shared prefix, e.g. a system prompt, costs far less
    /// than computing it again.
    pub(crate) fn copy_prefix(&self, n: usize, nkv: usize, hd: usize) -> Result<Cache> {
        let n = n.min(self.len);
        let mut out = Cache::new(self.layers.len(), self.max_len, self.kind);
        if n == 0 {
            return Ok(out);
        }
        for (dst, src) in out.layers.iter_mut().zip(&self.layers) {
            *dst = match src {
                Some(LayerKv::F32 { k, v }) => {
                    let cap = n.max(256).next_power_of_two().min(self.max_len).max(n);
                    let nk = Tensor::zeros((1, nkv, cap, hd), DType::F32, &Device::Cpu)?;
                    let nv = Tensor::zeros((1, nkv, cap, hd), DType::F32, &Device::Cpu)?;
                    nk.slice_set(&k.narrow(2, 0, n)?.contiguous()?, 2, 0)?;
                    nv.slice_set(&v.narrow(2, 0, n)?.contiguous()?, 2, 0)?;
                    Some(LayerKv::F32 { k: nk, v: nv })
                }
                Some(LayerKv::Q8 { k, v }) => {
                    let rows = |st: &Q8Store| Q8Store {
                        data: st.data[..n * nkv * hd].to_vec(),
                        scale: st.scale[..n * nkv].to_vec(),
                    };
                    Some(LayerKv::Q8 { k: rows(k), v: rows(v) })
                }
                None => bail!("kv cache: layer without keys in a cache of {} positions", self.len),
            };
        }
        out.len = n;
        Ok(out)
    }

    /// Store the keys and values (1, nkv, s, hd) of positions `len..len + s` of `layer`. The
    /// sequence length advances separately (the model does it once all layers are done).
    pub(crate) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let (_, nkv, s, hd) = k.dims4()?;
        let need = self.len + s;
        match self.kind {
            KvType::F32 => {
                let slot = &mut self.layers[layer];
                let cap = match slot {
                    Some(LayerKv::F32 { k, .. }) => k.dims()[2],
                    _ => 0,
                };
                if need > cap {
                    let mut new_cap = cap.max(256);
                    while new_cap < need {
                        new_cap *= 2;
                    }
                    let new_cap = new_cap.min(self.max_len).max(need);
                    let nk = Tensor::zeros((1, nkv, new_cap, hd), DType::F32, &Device::Cpu)?;
                    let nv = Tensor::zeros((1, nkv, new_cap, hd), DType::F32, &Device::Cpu)?;
                    if let Some(LayerKv::F32 { k: ok, v: ov }) = slot.as_ref() {
                        if self.len > 0 {
                            nk.slice_set(&ok.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                            nv.slice_set(&ov.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                        }
                    }
                    *slot = Some(LayerKv::F32 { k: nk, v: nv });
                }
                let Some(LayerKv::F32 { k: bk, v: bv }) = slot.as_ref() else { unreachable!() };
                bk.slice_set(&k.to_dtype(DType::F32)?.contiguous()?, 2, self.len)?;
                bv.slice_set(&v.to_dtype(DType::F32)?.contiguous()?, 2, self.len)?;
            }
            KvType::Q8 => {
                let slot = self.layers[layer]
                    .get_or_insert_with(|| LayerKv::Q8 { k: Q8Store::default(), v: Q8Store::default() });
                let LayerKv::Q8 { k: sk, v: sv } = slot else { bail!("kv cache: mixed storage") };
                for (store, x) in [(sk, k), (sv, v)] {
                    store.truncate_rows(self.len * nkv, hd);
                    // (1, nkv, s, hd) -> rows in (position, head) order.
                    let rows =
                        x.to_dtype(DType::F32)?.transpose(1, 2)?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                    for row in rows.chunks_exact(hd) {
                        store.push_row(row);
                    }
                }
            }
        }
        Ok(())
    }

    /// Append `n` positions of random keys and values to every layer. Benchmarks use it to decode
    /// at a depth whose prefill would take too long (32K tokens of a 3B model on two cores is
    /// hours): a decode step's cost does not depend on what the cache holds.
    pub fn push_random(&mut self, n: usize, kv_heads: usize, head_dim: usize) -> Result<()> {
        if self.len + n > self.max_len {
            bail!("context overflow: {} tokens exceed the context length of {}", self.len + n, self.max_len);
        }
        let mut left = n;
        while left > 0 {
            let s = left.min(1024);
            for layer in 0..self.layers.len() {
                let k = Tensor::randn(0f32, 1.0, (1, kv_heads, s, head_dim), &Device::Cpu)?;
                let v = Tensor::randn(0f32, 1.0, (1, kv_heads, s, head_dim), &Device::Cpu)?;
                self.append(layer, &k, &v)?;
            }
            self.len += s;
            left -= s;
        }
        Ok(())
    }

    /// Keys and values of the first `t` positions of `layer`, each (1, nkv, t, hd) f32.
    pub(crate) fn read(&self, layer: usize, t: usize, nkv: usize, hd: usize) -> Result<(Tensor, Tensor)> {
        match &self.layers[layer] {
            Some(LayerKv::F32 { k, v }) => Ok((k.narrow(2, 0, t)?, v.narrow(2, 0, t)?)),
            Some(LayerKv::Q8 { k, v }) => Ok((k.dequantize(t, nkv, hd)?, v.dequantize(t, nkv, hd)?)),
            None => bail!("kv cache: layer {layer} is empty"),
        }
    }

    /// Store `s` positions' keys and values (per position `nkv * hd` values, heads after each
    /// other) at `len..len + s` of `layer`: the batched path, which works on plain slices.
    pub(crate) fn append_rows(&mut self, layer: usize, k: &[f32], v: &[f32], s: usize, nkv: usize, hd: usize) -> Result<()> {
        let n = s * nkv * hd;
        if k.len() < n || v.len() < n {
            bail!("kv cache: {} and {} values for {s} positions", k.len(), v.len());
        }
        match self.kind {
            KvType::F32 => {
                let t = |x: &[f32]| -> Result<Tensor> {
                    let t = Tensor::from_slice(&x[..n], (1, s, nkv, hd), &Device::Cpu)?;
                    Ok(if s == 1 { t.reshape((1, nkv, 1, hd))? } else { t.transpose(1, 2)? })
                };
                self.append(layer, &t(k)?, &t(v)?)
            }
            KvType::Q8 => {
                let slot = self.layers[layer]
                    .get_or_insert_with(|| LayerKv::Q8 { k: Q8Store::default(), v: Q8Store::default() });
                let LayerKv::Q8 { k: sk, v: sv } = slot else { bail!("kv cache: mixed storage") };
                for (store, x) in [(sk, k), (sv, v)] {
                    store.truncate_rows(self.len * nkv, hd);
                    for row in x[..n].chunks_exact(hd) {
                        store.push_row(row);
                    }
                }
                Ok(())
            }
        }
    }

    /// Causal attention of `s` new queries (`q`: (nh, s, hd), roped) at positions `start..start + s`
    /// over the cache, which already holds their keys; returns (s, nh * hd).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attend_prefill_row(
        &self,
        layer: usize,
        q: &[f32],
        s: usize,
        start: usize,
        nh: usize,
        nkv: usize,
        hd: usize,
        parallel: bool,
    ) -> Result<Vec<f32>> {
        Ok(match &self.layers[layer] {
            Some(LayerKv::F32 { k, v }) => {
                let cap = k.dims()[2];
                attention::with_f32(k, |kd| {
                    attention::with_f32(v, |vd| {
                        let (kr, vr) = (F32Rows { data: kd, cap, hd }, F32Rows { data: vd, cap, hd });
                        attention::prefill(q, &kr, &vr, s, start, nh, nkv, hd, parallel)
                    })
                })??
            }
            Some(LayerKv::Q8 { k, v }) => {
                attention::prefill(q, &k.rows(nkv, hd), &v.rows(nkv, hd), s, start, nh, nkv, hd, parallel)
            }
            None => bail!("kv cache: layer {layer} is empty"),
        })
    }

    /// `attend_decode` on plain slices: `q` is nh * hd roped values; returns nh * hd. The same
    /// routine as a prompt chunk (one query row), so results do not depend on the split.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attend_decode_row(
        &self,
        layer: usize,
        q: &[f32],
        t: usize,
        nh: usize,
        nkv: usize,
        hd: usize,
        parallel: bool,
    ) -> Result<Vec<f32>> {
        self.attend_prefill_row(layer, q, 1, t - 1, nh, nkv, hd, parallel)
    }

    /// Single-query attention of `q` (1, nh, 1, hd) over the first `t` cached positions of
    /// `layer`, straight from the store. Returns (1, 1, nh * hd).
    pub(crate) fn attend_decode(&self, layer: usize, q: &Tensor, t: usize, nkv: usize) -> Result<Tensor> {
        let (_, nh, _, hd) = q.dims4()?;
        let q = q.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let out = self.attend_decode_row(layer, &q, t, nh, nkv, hd, true)?;
        Ok(Tensor::from_vec(out, (1, 1, nh * hd), &Device::Cpu)?)
    }
}

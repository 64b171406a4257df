//! AdamW (decoupled weight decay, as torch.optim.AdamW), gradient accumulation and global-norm
//! clipping. State (moments, and an f32 master copy for bf16/f16 weights) is plain f32 vectors, so
//! checkpoints can save and restore it exactly and low-precision weights still take small updates.
//!
//! Weight decay applies to matrices only (not norms or biases), the usual LLM practice.
//! Not here: the learning-rate schedule (schedule.rs) or the loss.

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;

pub struct Param {
    pub name: String,
    pub var: Var,
    m: Vec<f32>,
    v: Vec<f32>,
    /// f32 copy of a low-precision weight; the Var holds its rounding.
    master: Option<Vec<f32>>,
    decay: bool,
}

pub struct AdamW {
    pub params: Vec<Param>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Optimizer steps taken (bias correction uses it).
    pub t: u64,
}

fn to_f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, weight_decay: f64) -> Result<Self> {
        let mut params = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            let n = var.elem_count();
            let master = if var.dtype() == DType::F32 { None } else { Some(to_f32_vec(var.as_tensor())?) };
            let decay = var.rank() >= 2;
            params.push(Param { name, var, m: vec![0.0; n], v: vec![0.0; n], master, decay });
        }
        Ok(Self { params, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay, t: 0 })
    }

    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }

    /// One update with accumulated gradients `grads[i]` for `params[i]` (f32, flattened).
    pub fn step(&mut self, grads: &[Vec<f32>], lr: f64) -> Result<()> {
        if grads.len() != self.params.len() {
            bail!("{} gradients for {} parameters", grads.len(), self.params.len());
        }
        self.t += 1;
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        let step = (lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let eps = self.eps as f32;
        let wd = (lr * self.weight_decay) as f32;
        for (p, g) in self.params.iter_mut().zip(grads) {
            let mut w = match p.master.take() {
                Some(m) => m,
                None => to_f32_vec(p.var.as_tensor())?,
            };
            let decay = if p.decay { wd } else { 0.0 };
            for i in 0..w.len() {
                let gi = g[i];
                p.m[i] = b1 * p.m[i] + (1.0 - b1) * gi;
                p.v[i] = b2 * p.v[i] + (1.0 - b2) * gi * gi;
                w[i] -= decay * w[i];
                w[i] -= step * p.m[i] / (p.v[i].sqrt() / bc2_sqrt + eps);
            }
            let t = Tensor::from_slice(&w, p.var.shape(), &Device::Cpu)?.to_dtype(p.var.dtype())?;
            p.var.set(&t)?;
            if p.var.dtype() != DType::F32 {
                p.master = Some(w);
            }
        }
        Ok(())
    }

    /// Optimizer state under stable names, for a checkpoint: `<param>.m`, `<param>.v` and
    /// `<param>.master` (low-precision weights only), plus the step count.
    pub fn state(&self) -> Result<(Vec<(String, Tensor)>, u64)> {
        let mut out = Vec::new();
        for p in &self.params {
            let shape = p.var.shape();
            out.push((format!("{}.m", p.name), Tensor::from_slice(&p.m, shape, &Device::Cpu)?));
            out.push((format!("{}.v", p.name), Tensor::from_slice(&p.v, shape, &Device::Cpu)?));
            if let Some(m) = &p.master {
                out.push((format!("{}.master", p.name), Tensor::from_slice(m, shape, &Device::Cpu)?));
            }
        }
        Ok((out, self.t))
    }

    /// Restore what `state` saved; every parameter must be present with its shape.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, t: u64) -> Result<()> {
        for p in self.params.iter_mut() {
            let get = |suffix: &str| -> Result<Vec<f32>> {
                let key = format!("{}.{suffix}", p.name);
                let s = state.get(&key).with_context(|| format!("optimizer state has no `{key}`"))?;
                if s.dims() != p.var.dims() {
                    bail!("optimizer state `{key}` has shape {:?}, the parameter {:?}", s.dims(), p.var.dims());
                }
                to_f32_vec(s)
            };
            p.m = get("m")?;
            p.v = get("v")?;
            if p.master.is_some() {
                p.master = Some(get("master")?);
            }
        }
        self.t = t;
        Ok(())
    }
}

/// Gradients summed over the micro-batches of one optimizer step.
pub struct GradAccum {
    pub grads: Vec<Vec<f32>>,
}

impl GradAccum {
    pub fn new(opt: &AdamW) -> Self {
        Self { grads: opt.params.iter().map(|p| vec![0.0; p.var.elem_count()]).collect() }
    }

    /// Add one backward pass's gradients. A parameter the loss does not reach gets none.
    pub fn add(&mut self, opt: &AdamW, store: &GradStore) -> Result<()> {
        for (acc, p) in self.grads.iter_mut().zip(&opt.params) {
            if let Some(g) = store.get(p.var.as_tensor()) {
                for (a, x) in acc.iter_mut().zip(to_f32_vec(g)?) {
                    *a += x;
                }
            }
        }
        Ok(())
    }

    /// Global L2 norm of the gradients.
    pub fn norm(&self) -> f64 {
        self.grads.iter().flatten().map(|&g| (g as f64) * (g as f64)).sum::<f64>().sqrt()
    }

    /// Scale gradients down so their global norm is at most `max_norm` (torch's
    /// clip_grad_norm_ rule). Returns the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> f64 {
        let norm = self.norm();
        if max_norm > 0.0 && norm > max_norm {
            let s = (max_norm / (norm + 1e-6)) as f32;
            self.grads.iter_mut().flatten().for_each(|g| *g *= s);
        }
        norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torch.optim.AdamW's documented algorithm (lr=0.1, betas=(0.9, 0.95), eps=1e-8,
    /// weight_decay=0.1) on p = [1.0, -2.0] with grads [0.5, -1.0] then [0.1, 0.3], recomputed
    /// in f64. (The PyTorch fixture test checks a real torch run end to end.)
    #[test]
    fn adamw_matches_textbook_update() {
        let var = Var::new(&[[1.0f32, -2.0]], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![("w".into(), var.clone())], 0.1).unwrap();
        let grads = [[0.5f64, -1.0], [0.1, 0.3]];
        let (mut p, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
        for (t, g) in grads.iter().enumerate() {
            opt.step(&[g.iter().map(|&x| x as f32).collect()], 0.1).unwrap();
            let t = (t + 1) as i32;
            for i in 0..2 {
                p[i] *= 1.0 - 0.1 * 0.1;
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.95 * v[i] + 0.05 * g[i] * g[i];
                let mh = m[i] / (1.0 - 0.9f64.powi(t));
                let vh = v[i] / (1.0 - 0.95f64.powi(t));
                p[i] -= 0.1 * mh / (vh.sqrt() + 1e-8);
            }
        }
        let got = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in 0..2 {
            assert!((got[i] as f64 - p[i]).abs() < 1e-6, "{got:?} vs {p:?}");
        }
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let var = Var::new(&[3.0f32, 4.0], &Device::Cpu).unwrap();
        let opt = AdamW::new(vec![("b".into(), var)], 0.0).unwrap();
        let mut acc = GradAccum::new(&opt);
        acc.grads[0] = vec![3.0, 4.0];
        assert!((acc.clip(1.0) - 5.0).abs() < 1e-9);
        assert!((acc.norm() - 1.0).abs() < 1e-5);
        assert!((acc.clip(10.0) - 1.0).abs() < 1e-5, "no clipping below the bound");
    }

    #[test]
    fn bf16_weights_keep_an_f32_master() {
        let var =
            Var::from_tensor(&Tensor::new(&[[1.0f32]], &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap()).unwrap();
        let mut opt = AdamW::new(vec![("w".into(), var.clone())], 0.0).unwrap();
        // Updates of 1e-4 vanish in bf16 (spacing near 1 is 2^-7) but add up in the master.
        for _ in 0..200 {
            opt.step(&[vec![1.0]], 1e-4).unwrap();
        }
        let w = var.as_tensor().to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((w - 0.98).abs() < 0.005, "{w}");
    }
}

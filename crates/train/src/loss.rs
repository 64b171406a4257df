//! Differentiable losses over a packed row's logits (n, vocab), all built from candle ops so
//! autograd reaches the weights: token log-probabilities, masked cross-entropy (SFT), KL to a
//! teacher distribution (token-level distillation) and the DPO preference loss (dual preference
//! distillation here, offline DPO and pair-wise RL later).
//!
//! Losses return *sums* over weighted tokens; the caller divides by the token count of the whole
//! optimizer step, so gradient accumulation gives exactly the gradient of one big batch.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, D};

/// log p(target_i | prefix) for each position: (n,). `logits` (n, vocab) or (1, n, vocab).
pub fn token_logprobs(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let logits = flat(logits)?;
    let n = logits.dims()[0];
    if targets.len() != n {
        bail!("{} targets for {} positions", targets.len(), n);
    }
    let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let idx = Tensor::new(targets, &Device::Cpu)?.unsqueeze(1)?;
    Ok(lp.gather(&idx, 1)?.squeeze(1)?)
}

/// Sum over positions of weight_i * -log p(target_i): the SFT loss before normalization.
pub fn ce_sum(logits: &Tensor, targets: &[u32], weights: &[f32]) -> Result<Tensor> {
    let lp = token_logprobs(logits, targets)?;
    let w = Tensor::new(weights, &Device::Cpu)?;
    Ok((lp * w)?.sum_all()?.neg()?)
}

/// Sum over positions of weight_i * T^2 * KL(teacher_i || student_i) at temperature `t`
/// (Hinton et al.: the T^2 keeps gradient scale independent of T). The teacher is a constant.
pub fn kl_sum(student: &Tensor, teacher: &Tensor, weights: &[f32], t: f64) -> Result<Tensor> {
    let s = flat(student)?;
    let te = flat(teacher)?.detach();
    if s.dims() != te.dims() {
        bail!("student logits {:?} and teacher logits {:?} differ in shape", s.dims(), te.dims());
    }
    let ls = candle_nn::ops::log_softmax(&(s / t)?, D::Minus1)?;
    let lt = candle_nn::ops::log_softmax(&(te / t)?, D::Minus1)?;
    let pt = lt.exp()?;
    let kl = (pt * (lt - ls)?)?.sum(D::Minus1)?; // (n,)
    let w = Tensor::new(weights, &Device::Cpu)?;
    Ok(((kl * w)?.sum_all()? * (t * t))?)
}

/// log σ(x) = -log(1 + e^-x), smooth everywhere (the usual min(x,0) - log(1 + e^-|x|) form has
/// kinks at 0 whose autograd subgradients do not cancel, and DPO starts exactly at x = 0), computed
/// in f64 so e^-x cannot overflow for any realistic x (|x| < 700).
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let x64 = x.to_dtype(DType::F64)?;
    Ok((x64.neg()?.exp()? + 1.0)?.log()?.neg()?.to_dtype(x.dtype())?)
}

/// DPO loss (Rafailov et al. 2023), mean over pairs:
/// -log σ(β [(log π(y_w) - log π_ref(y_w)) - (log π(y_l) - log π_ref(y_l))]).
/// Inputs are (pairs,) sequence log-probabilities (sums of token log-probs over the response);
/// the reference ones are constants. Returns (loss, mean implicit reward margin).
pub fn dpo_loss(
    policy_chosen: &Tensor,
    policy_rejected: &Tensor,
    ref_chosen: &Tensor,
    ref_rejected: &Tensor,
    beta: f64,
) -> Result<(Tensor, f32)> {
    let chosen = (policy_chosen - ref_chosen.detach())?;
    let rejected = (policy_rejected - ref_rejected.detach())?;
    let z = ((chosen - rejected)? * beta)?;
    let margin = z.to_dtype(DType::F32)?.mean_all()?.to_scalar::<f32>()?;
    Ok((log_sigmoid(&z)?.mean_all()?.neg()?, margin))
}

/// Sum of token log-probs over the positions with weight > 0: a response's sequence log-prob.
pub fn sequence_logprob(logits: &Tensor, targets: &[u32], weights: &[f32]) -> Result<Tensor> {
    let lp = token_logprobs(logits, targets)?;
    Ok((lp * Tensor::new(weights, &Device::Cpu)?)?.sum_all()?)
}

fn flat(logits: &Tensor) -> Result<Tensor> {
    Ok(match logits.rank() {
        2 => logits.clone(),
        3 => logits.squeeze(0)?,
        r => bail!("logits of rank {r}; expected (n, vocab) or (1, n, vocab)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn ce_matches_hand_computation() {
        // logits [0, ln 3] -> p = [1/4, 3/4].
        let logits = Tensor::new(&[[0f32, 3f32.ln()], [0.0, 0.0]], &Device::Cpu).unwrap();
        let l = ce_sum(&logits, &[1, 0], &[1.0, 0.0]).unwrap().to_scalar::<f32>().unwrap();
        assert!((l - (4.0f32 / 3.0).ln()).abs() < 1e-6, "{l}");
        let l = ce_sum(&logits, &[1, 0], &[1.0, 1.0]).unwrap().to_scalar::<f32>().unwrap();
        assert!((l - ((4.0f32 / 3.0).ln() + 2f32.ln())).abs() < 1e-6);
    }

    #[test]
    fn kl_is_zero_for_equal_and_matches_hand_value() {
        let a = Tensor::new(&[[1f32, 2.0, 3.0]], &Device::Cpu).unwrap();
        assert!(kl_sum(&a, &a, &[1.0], 1.0).unwrap().to_scalar::<f32>().unwrap().abs() < 1e-6);
        // teacher p = [1/2, 1/2], student q = [1/4, 3/4]: KL = 0.5 ln 2 + 0.5 ln(2/3).
        let te = Tensor::new(&[[0f32, 0.0]], &Device::Cpu).unwrap();
        let st = Tensor::new(&[[0f32, 3f32.ln()]], &Device::Cpu).unwrap();
        let kl = kl_sum(&st, &te, &[1.0], 1.0).unwrap().to_scalar::<f32>().unwrap();
        let want = 0.5 * 2f32.ln() + 0.5 * (2.0f32 / 3.0).ln();
        assert!((kl - want).abs() < 1e-6, "{kl} vs {want}");
    }

    #[test]
    fn dpo_matches_hand_computation() {
        // pair 1: chosen gains 1 over ref, rejected loses 0.5 -> z = 0.1 * 1.5 = 0.15
        // pair 2: chosen loses 2, rejected gains 1 -> z = 0.1 * -3 = -0.3
        let (l, margin) =
            dpo_loss(&t(&[-1.0, -7.0]), &t(&[-3.5, -4.0]), &t(&[-2.0, -5.0]), &t(&[-3.0, -5.0]), 0.1).unwrap();
        let ls = |z: f64| -(1.0 + (-z).exp()).ln();
        let want = -(ls(0.15) + ls(-0.3)) / 2.0;
        assert!((l.to_scalar::<f32>().unwrap() as f64 - want).abs() < 1e-6);
        assert!((margin as f64 - (-0.075)).abs() < 1e-6);
        // Large |z| stays finite.
        let big = log_sigmoid(&t(&[-100.0, 100.0])).unwrap().to_vec1::<f32>().unwrap();
        assert!((big[0] + 100.0).abs() < 1e-4 && big[1].abs() < 1e-6);
    }

    #[test]
    fn dpo_gradient_pushes_chosen_up() {
        let pc = candle_core::Var::new(&[-2f32], &Device::Cpu).unwrap();
        let (l, _) = dpo_loss(pc.as_tensor(), &t(&[-2.0]), &t(&[-2.0]), &t(&[-2.0]), 0.5).unwrap();
        let g = l.backward().unwrap();
        // d/dpc of -log σ(β(pc - ...)) at z = 0 is -β/2.
        let gv = g.get(pc.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((gv + 0.25).abs() < 1e-6, "{gv}");
    }
}

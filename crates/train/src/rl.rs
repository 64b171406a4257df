//! The arithmetic of policy-gradient RL, apart from any model or data, so each piece is unit-tested
//! against hand-computed values: group-normalized advantages (GRPO), the pass-rate filter, the
//! clipped surrogate loss with token-level normalization (DAPO-style asymmetric clip), the k3 KL
//! estimate to a reference policy, win-rate rewards from pairwise comparisons inside a group, the
//! Bradley-Terry loss of a pairwise reward model, and turn-level credit for agent trajectories.
//!
//! Not here: rollouts, scoring, the optimizer loop (grpo.rs), reward models (rm.rs).

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

/// GRPO advantages of one group: (r - mean) / (std + eps), std over the group (population).
/// A group whose rewards are all equal has no signal: every advantage is 0.
pub fn group_advantages(rewards: &[f64], scale_by_std: bool) -> Vec<f64> {
    let n = rewards.len();
    if n == 0 {
        return vec![];
    }
    let mean = rewards.iter().sum::<f64>() / n as f64;
    let var = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n as f64;
    let std = var.sqrt();
    if std < 1e-9 {
        return vec![0.0; n];
    }
    rewards.iter().map(|r| if scale_by_std { (r - mean) / (std + 1e-6) } else { r - mean }).collect()
}

/// The pass-rate filter: keep a group only if some samples pass and some fail (`pass` = reward at
/// least `threshold`); groups that all pass or all fail teach nothing and are dropped.
pub fn informative(rewards: &[f64], threshold: f64) -> bool {
    let passed = rewards.iter().filter(|&&r| r >= threshold).count();
    passed > 0 && passed < rewards.len()
}

/// Clipped surrogate loss summed over tokens (the caller divides by the token count of the whole
/// step: token-level normalization, so long answers are not down-weighted per token):
/// sum_i w_i * -min(ρ_i A_i, clip(ρ_i, 1-ε_lo, 1+ε_hi) A_i), with ρ_i = exp(logp_i - old_i).
/// `logp` is differentiable (n,); `old`, `adv`, `weights` are constants of length n.
pub fn clipped_policy_loss(
    logp: &Tensor,
    old: &[f32],
    adv: &[f32],
    weights: &[f32],
    eps_low: f64,
    eps_high: f64,
) -> Result<Tensor> {
    let n = logp.dims1()?;
    if old.len() != n || adv.len() != n || weights.len() != n {
        bail!("policy loss: {} log-probs, {} old, {} advantages, {} weights", n, old.len(), adv.len(), weights.len());
    }
    let dev = &Device::Cpu;
    let ratio = (logp - Tensor::new(old, dev)?)?.exp()?;
    let a = Tensor::new(adv, dev)?;
    let unclipped = (&ratio * &a)?;
    let clipped = (ratio.clamp(1.0 - eps_low, 1.0 + eps_high)? * &a)?;
    let surrogate = unclipped.minimum(&clipped)?;
    Ok((surrogate * Tensor::new(weights, dev)?)?.sum_all()?.neg()?)
}

/// k3 estimate of KL(π || π_ref) per token, summed with weights: exp(d) - d - 1 with
/// d = logp_ref - logp (Schulman's unbiased, always non-negative estimator; GRPO's KL term).
pub fn kl_k3_sum(logp: &Tensor, ref_logp: &[f32], weights: &[f32]) -> Result<Tensor> {
    let dev = &Device::Cpu;
    let d = (Tensor::new(ref_logp, dev)? - logp)?;
    let k3 = ((d.exp()? - &d)? - 1.0)?;
    Ok((k3 * Tensor::new(weights, dev)?)?.sum_all()?)
}

/// Pair-wise rewards inside a group: each sample's win rate against the others under
/// `prefer(i, j)` (probability that i beats j, from a reward model or a judge; 0.5 is a tie).
pub fn win_rates(n: usize, mut prefer: impl FnMut(usize, usize) -> Result<f64>) -> Result<Vec<f64>> {
    if n < 2 {
        return Ok(vec![0.5; n]);
    }
    let mut wins = vec![0.0; n];
    for i in 0..n {
        for j in i + 1..n {
            let p = prefer(i, j)?.clamp(0.0, 1.0);
            wins[i] += p;
            wins[j] += 1.0 - p;
        }
    }
    Ok(wins.into_iter().map(|w| w / (n - 1) as f64).collect())
}

/// Bradley-Terry loss of a pairwise reward model, mean over pairs: -log σ(r_chosen - r_rejected).
/// Inputs are (pairs,) scalar rewards. Returns (loss, accuracy: share with r_chosen > r_rejected).
pub fn bradley_terry_loss(chosen: &Tensor, rejected: &Tensor) -> Result<(Tensor, f64)> {
    let margin = (chosen - rejected)?;
    let m = margin.to_vec1::<f32>()?;
    let acc = m.iter().filter(|&&x| x > 0.0).count() as f64 / m.len().max(1) as f64;
    Ok((crate::loss::log_sigmoid(&margin)?.mean_all()?.neg()?, acc))
}

/// Turn-level credit for an agent trajectory: the final reward R reaches turn t (of T) discounted
/// by γ^(T-1-t), so the last turns, closest to the answer, carry the most credit; turns a filter
/// marked useless (`keep[t]` false) get none.
pub fn turn_credit(final_reward: f64, keep: &[bool], gamma: f64) -> Vec<f64> {
    let t = keep.len();
    keep.iter()
        .enumerate()
        .map(|(i, &k)| if k { final_reward * gamma.powi((t - 1 - i) as i32) } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-5
    }

    #[test]
    fn advantages_are_group_normalized() {
        // rewards 1,0,0,1: mean 0.5, std 0.5 -> ±1.
        let a = group_advantages(&[1.0, 0.0, 0.0, 1.0], true);
        for (x, want) in a.iter().zip([1.0, -1.0, -1.0, 1.0]) {
            assert!((x - want).abs() < 1e-4, "{a:?}");
        }
        // 3 of 4 pass: mean 0.75, std sqrt(0.1875) = 0.4330 -> +0.5774, -1.7321
        let a = group_advantages(&[1.0, 1.0, 0.0, 1.0], true);
        assert!((a[0] - 0.57735).abs() < 1e-4 && (a[2] + 1.73205).abs() < 1e-4, "{a:?}");
        assert!(a.iter().sum::<f64>().abs() < 1e-9);
        // Without std scaling (Dr. GRPO): just centered.
        assert_eq!(group_advantages(&[2.0, 0.0], false), vec![1.0, -1.0]);
        // No signal: all zero.
        assert_eq!(group_advantages(&[1.0, 1.0, 1.0], true), vec![0.0; 3]);
        assert!(group_advantages(&[], true).is_empty());
    }

    #[test]
    fn pass_rate_filter_drops_all_pass_and_all_fail() {
        assert!(!informative(&[1.0, 1.0, 1.0], 1.0));
        assert!(!informative(&[0.0, 0.5, 0.0], 1.0));
        assert!(informative(&[0.0, 1.0, 0.0], 1.0));
        assert!(informative(&[0.2, 0.9], 0.5));
    }

    #[test]
    fn clipped_loss_matches_hand_values_and_clips_gradients() {
        // Token 0: ratio e^0.5 = 1.6487 > 1.2 with A = +1 -> clipped: loss term -1.2, no gradient.
        // Token 1: ratio e^-0.1 = 0.9048 with A = -2 -> inside the clip range: term +1.8097,
        //          gradient d/dlogp (-ratio*A) = -ratio*A = 1.8097.
        // Token 2: ratio e^-0.5 = 0.6065 < 0.8 with A = -1 -> min(ρA, clip(ρ)A) = min(-0.61, -0.8)
        //          = -0.8, clipped: no incentive to push it further down, no gradient.
        // Token 3: weight 0 -> nothing.
        let logp = Var::new(&[0.5f32, -0.1, -0.5, 3.0], &Device::Cpu).unwrap();
        let old = [0.0f32, 0.0, 0.0, 0.0];
        let adv = [1.0f32, -2.0, -1.0, 5.0];
        let w = [1.0f32, 1.0, 1.0, 0.0];
        let l = clipped_policy_loss(logp.as_tensor(), &old, &adv, &w, 0.2, 0.2).unwrap();
        let want = -1.2 + 2.0 * (-0.1f64).exp() + 0.8;
        assert!(close(l.to_scalar::<f32>().unwrap() as f64, want), "{} vs {want}", l);
        let g = l.backward().unwrap().get(logp.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!(close(g[0] as f64, 0.0), "{g:?}");
        assert!(close(g[1] as f64, 2.0 * (-0.1f64).exp()), "{g:?}");
        assert!(close(g[2] as f64, 0.0), "{g:?}");
        assert!(close(g[3] as f64, 0.0), "{g:?}");
        // Asymmetric clip (clip-higher): ε_high 0.7 lets token 0's ratio 1.65 through.
        let l = clipped_policy_loss(logp.as_tensor(), &old, &adv, &w, 0.2, 0.7).unwrap();
        let want = -(0.5f64).exp() + 2.0 * (-0.1f64).exp() + 0.8;
        assert!(close(l.to_scalar::<f32>().unwrap() as f64, want));
    }

    #[test]
    fn on_policy_gradient_is_advantage_times_score() {
        // With old = logp (one update per batch) the ratio is 1 and d loss/d logp_i = -A_i w_i.
        let logp = Var::new(&[-1.0f32, -2.0, -0.3], &Device::Cpu).unwrap();
        let old = [-1.0f32, -2.0, -0.3];
        let l = clipped_policy_loss(logp.as_tensor(), &old, &[0.5, -1.5, 2.0], &[1.0, 1.0, 0.5], 0.2, 0.28).unwrap();
        assert!(close(l.to_scalar::<f32>().unwrap() as f64, -(0.5 - 1.5 + 1.0)));
        let g = l.backward().unwrap().get(logp.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g, vec![-0.5, 1.5, -1.0]);
    }

    #[test]
    fn k3_kl_matches_hand_values() {
        let logp = Tensor::new(&[-1.0f32, -2.0], &Device::Cpu).unwrap();
        // d = ref - logp = 0.5 and 0: e^0.5 - 0.5 - 1 = 0.148721, 0.
        let k = kl_k3_sum(&logp, &[-0.5, -2.0], &[1.0, 1.0]).unwrap().to_scalar::<f32>().unwrap();
        assert!(close(k as f64, 0.5f64.exp() - 1.5), "{k}");
        let k = kl_k3_sum(&logp, &[-0.5, -2.0], &[0.0, 1.0]).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(k, 0.0);
    }

    #[test]
    fn win_rates_from_pairwise_preferences() {
        // Scores 3 > 2 > 1 with a hard judge: win rates 1, 0.5, 0.
        let s = [1.0, 3.0, 2.0];
        let w = win_rates(3, |i, j| Ok(if s[i] > s[j] { 1.0 } else if s[i] < s[j] { 0.0 } else { 0.5 })).unwrap();
        assert_eq!(w, vec![0.0, 1.0, 0.5]);
        // Ties everywhere: all 0.5; win rates of a group sum to n/2.
        assert_eq!(win_rates(4, |_, _| Ok(0.5)).unwrap(), vec![0.5; 4]);
        assert_eq!(win_rates(1, |_, _| Ok(1.0)).unwrap(), vec![0.5]);
    }

    #[test]
    fn bradley_terry_matches_hand_values() {
        let c = Var::new(&[2.0f32, 0.0], &Device::Cpu).unwrap();
        let r = Tensor::new(&[1.0f32, 1.0], &Device::Cpu).unwrap();
        let (l, acc) = bradley_terry_loss(c.as_tensor(), &r).unwrap();
        // margins 1 and -1: mean of ln(1+e^-1) and ln(1+e^1).
        let want = ((1.0 + (-1f64).exp()).ln() + (1.0 + 1f64.exp()).ln()) / 2.0;
        assert!(close(l.to_scalar::<f32>().unwrap() as f64, want));
        assert_eq!(acc, 0.5);
        // d/dc_i = -(1 - σ(m_i)) / 2.
        let g = l.backward().unwrap().get(c.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        assert!(close(g[0] as f64, -(1.0 - sig(1.0)) / 2.0) && close(g[1] as f64, -(1.0 - sig(-1.0)) / 2.0));
    }

    #[test]
    fn turn_credit_discounts_toward_the_start_and_skips_filtered_turns() {
        let c = turn_credit(1.0, &[true, false, true, true], 0.5);
        assert_eq!(c, vec![0.125, 0.0, 0.5, 1.0]);
        assert_eq!(turn_credit(-2.0, &[true], 0.9), vec![-2.0]);
    }
}

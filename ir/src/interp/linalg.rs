//! Matrix products: batched `matmul` with broadcast batch dims and `linear` (`x w^T`), both on
//! `matrixmultiply::sgemm` with explicit strides (f32 accumulation, as torch's f32 matmul).

use super::tensor::{Tensor, TensorData, broadcast_strides, offsets};
use super::{OpError, OpResult, elems};

/// One row-major-strided matrix operand of [`gemm`]: `data[off + r * rs + c * cs]`.
struct Mat<'a> {
    data: &'a [f32],
    off: usize,
    rs: usize,
    cs: usize,
}

impl Mat<'_> {
    /// Whether every element of a `rows x cols` matrix lies inside `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        let last = (rows.saturating_sub(1))
            .checked_mul(self.rs)
            .and_then(|r| cols.saturating_sub(1).checked_mul(self.cs).and_then(|c| r.checked_add(c)))
            .and_then(|rc| rc.checked_add(self.off));
        matches!(last, Some(l) if l < self.data.len())
    }
}

/// `c[..m*n] = a (m x k) * b (k x n)`, `c` row-major contiguous.
fn gemm(m: usize, k: usize, n: usize, a: Mat, b: Mat, c: &mut [f32]) -> Result<(), OpError> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        c[..m * n].fill(0.0);
        return Ok(());
    }
    if !a.fits(m, k) || !b.fits(k, n) || c.len() < m * n {
        return Err(OpError::Internal(format!("gemm {m}x{k}x{n} operands out of bounds")));
    }
    let stride =
        |s: usize| isize::try_from(s).map_err(|_| OpError::Internal(format!("stride {s} overflows")));
    let (rsa, csa, rsb, csb, rsc) = (stride(a.rs)?, stride(a.cs)?, stride(b.rs)?, stride(b.cs)?, stride(n)?);
    // SAFETY: `fits` checked that every element of A (m x k) and B (k x n) read through these
    // offsets and strides is inside its slice, and `c` holds the m x n row-major output; the
    // output does not alias the inputs (it is a distinct `&mut`).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr().add(a.off),
            rsa,
            csa,
            b.data.as_ptr().add(b.off),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            rsc,
            1,
        );
    }
    Ok(())
}

/// `a [..., M, K] @ b [..., K, N]` with batch dims broadcast to `shape[..len-2]`.
pub(super) fn matmul(a: &Tensor, b: &Tensor, shape: &[usize]) -> OpResult {
    let (x, y) = (elems::<f32>(a, "lhs")?, elems::<f32>(b, "rhs")?);
    let (ar, br, r) = (a.shape.len(), b.shape.len(), shape.len());
    if ar < 2 || br < 2 || r < 2 {
        return Err(OpError::Internal(format!("matmul of {:?} and {:?}", a.shape, b.shape)));
    }
    let (m, k) = (a.shape[ar - 2], a.shape[ar - 1]);
    let (kb, n) = (b.shape[br - 2], b.shape[br - 1]);
    if k != kb || shape[r - 2] != m || shape[r - 1] != n {
        return Err(OpError::Internal(format!("matmul of {:?} and {:?} to {shape:?}", a.shape, b.shape)));
    }
    let batch = &shape[..r - 2];
    let sa = broadcast_strides(&a.shape[..ar - 2], batch, m * k)?;
    let sb = broadcast_strides(&b.shape[..br - 2], batch, k * n)?;
    let mut out = vec![0f32; shape.iter().product()];
    if m * n > 0 {
        let pairs = offsets(batch, &sa, 0).zip(offsets(batch, &sb, 0));
        for (c, (ao, bo)) in out.chunks_exact_mut(m * n).zip(pairs) {
            let am = Mat { data: x, off: ao, rs: k, cs: 1 };
            let bm = Mat { data: y, off: bo, rs: n, cs: 1 };
            gemm(m, k, n, am, bm, c)?;
        }
    }
    Ok(Tensor { shape: shape.to_vec(), data: TensorData::F32(out) })
}

/// `x [..., K] @ w [N, K]^T -> [..., N]`: `w` is read transposed through its strides.
pub(super) fn linear(x: &Tensor, w: &Tensor, shape: &[usize]) -> OpResult {
    let (xv, wv) = (elems::<f32>(x, "input")?, elems::<f32>(w, "weight")?);
    let (&k, lead) = x.shape.split_last().ok_or_else(|| OpError::Internal("rank-0 input".into()))?;
    let &[n, kw] = w.shape.as_slice() else {
        return Err(OpError::Internal(format!("weight shape {:?} is not rank 2", w.shape)));
    };
    if kw != k || shape.split_last().map(|(&sn, sl)| (sn, sl)) != Some((n, lead)) {
        return Err(OpError::Internal(format!("linear of {:?} and {:?} to {shape:?}", x.shape, w.shape)));
    }
    let m: usize = lead.iter().product();
    let mut out = vec![0f32; m * n];
    let am = Mat { data: xv, off: 0, rs: k, cs: 1 };
    let bm = Mat { data: wv, off: 0, rs: 1, cs: k };
    gemm(m, k, n, am, bm, &mut out)?;
    Ok(Tensor { shape: shape.to_vec(), data: TensorData::F32(out) })
}

/// `silu(x w_gate^T) * (x w_up^T)`.
pub(super) fn gated_linear(x: &Tensor, w_gate: &Tensor, w_up: &Tensor, shape: &[usize]) -> OpResult {
    let gate = linear(x, w_gate, shape)?;
    let up = linear(x, w_up, shape)?;
    let (g, u) = (elems::<f32>(&gate, "gate")?, elems::<f32>(&up, "up")?);
    let data = g.iter().zip(u).map(|(&g, &u)| crate::UnaryOp::Silu.apply(g) * u).collect();
    Ok(Tensor { shape: shape.to_vec(), data: TensorData::F32(data) })
}

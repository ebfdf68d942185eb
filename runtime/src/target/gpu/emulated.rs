//! An emulated device: memory is host memory, a launch runs the kernel in the
//! GPU-semantics evaluator (`lsc_kir::gpu::eval`: every block, every thread,
//! barriers and warp lanes) on the bytes its arguments point at, and a GEMM is
//! cuBLAS's column-major definition computed on the host. It stands in for
//! the driver under the same GPU target, so everything but the driver calls
//! is checked without a GPU. It is slow: every thread is interpreted.

use super::cublas;
use super::device::{Device, Gemm, Ptr};
use lsc_kir::gpu::eval::{round_bf16, round_f16};
use lsc_kir::{Elem, Kernel};
use std::sync::Mutex;

/// The emulated device.
#[derive(Default)]
pub struct Emulated;

/// An allocation: bytes behind a lock (launches lock one argument at a time).
pub struct Memory(Mutex<Vec<u8>>);

impl Memory {
    fn bytes(&self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        let m = self.0.lock().map_err(|_| "emulated device memory is poisoned".to_string())?;
        let end = offset.checked_add(len).filter(|&e| e <= m.len() as u64);
        let end = end.ok_or_else(|| format!("{len} bytes at {offset} reach past an allocation of {}", m.len()))?;
        Ok(m[offset as usize..end as usize].to_vec())
    }

    fn put(&self, offset: u64, bytes: &[u8]) -> Result<(), String> {
        let mut m = self.0.lock().map_err(|_| "emulated device memory is poisoned".to_string())?;
        let end = offset.checked_add(bytes.len() as u64).filter(|&e| e <= m.len() as u64);
        let end =
            end.ok_or_else(|| format!("{} bytes at {offset} reach past an allocation of {}", bytes.len(), m.len()))?;
        m[offset as usize..end as usize].copy_from_slice(bytes);
        Ok(())
    }
}

/// The elements of a buffer of `elem` as the evaluator holds them.
fn elements(bytes: &[u8], elem: Elem) -> Vec<f64> {
    let n = elem.bytes() as usize;
    bytes
        .chunks_exact(n)
        .map(|b| match elem {
            Elem::F32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Elem::BF16 => f64::from(f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)),
            Elem::F16 => f64::from(half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
            Elem::I32 => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Elem::U32 => f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Elem::I64 => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f64,
            Elem::U8 => f64::from(b[0]),
        })
        .collect()
}

/// The bytes of elements of `elem` (values the evaluator stored, so already representable).
fn bytes(values: &[f64], elem: Elem) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * elem.bytes() as usize);
    for &v in values {
        match elem {
            Elem::F32 => out.extend((v as f32).to_le_bytes()),
            Elem::BF16 => out.extend(((round_bf16(v as f32).to_bits() >> 16) as u16).to_le_bytes()),
            Elem::F16 => out.extend(half::f16::from_f32(round_f16(v as f32)).to_le_bytes()),
            Elem::I32 => out.extend((v as i32).to_le_bytes()),
            Elem::U32 => out.extend((v as u32).to_le_bytes()),
            Elem::I64 => out.extend((v as i64).to_le_bytes()),
            Elem::U8 => out.push(v as u8),
        }
    }
    out
}

/// `len` elements of `elem` at `p`, as f32s (GEMM operands).
fn floats(p: Ptr<'_, Memory>, len: u64, elem: Elem) -> Result<Vec<f32>, String> {
    Ok(elements(&p.buffer.bytes(p.offset, len * elem.bytes())?, elem).into_iter().map(|x| x as f32).collect())
}

impl Device for Emulated {
    type Buffer = Memory;
    type Function = Kernel;

    fn name(&self) -> String {
        "emulated device".into()
    }

    /// The emulated device's memory is the host's.
    fn free_memory(&self) -> Option<u64> {
        crate::resources::available_memory()
    }

    fn alloc(&self, bytes: u64) -> Result<Memory, String> {
        let n = usize::try_from(bytes).map_err(|_| format!("{bytes} bytes do not fit host memory"))?;
        let mut v = Vec::new();
        v.try_reserve_exact(n).map_err(|_| format!("cannot allocate {bytes} bytes of emulated device memory"))?;
        v.resize(n, 0);
        Ok(Memory(Mutex::new(v)))
    }

    fn write(&self, to: Ptr<'_, Memory>, bytes: &[u8]) -> Result<(), String> {
        to.buffer.put(to.offset, bytes)
    }

    fn read(&self, from: Ptr<'_, Memory>, len: u64) -> Result<Vec<u8>, String> {
        from.buffer.bytes(from.offset, len)
    }

    fn copy(&self, from: Ptr<'_, Memory>, to: Ptr<'_, Memory>, bytes: u64) -> Result<(), String> {
        let data = from.buffer.bytes(from.offset, bytes)?;
        to.buffer.put(to.offset, &data)
    }

    fn load(&self, kernel: &Kernel) -> Result<Kernel, String> {
        lsc_kir::check::in_bounds(kernel)?;
        Ok(kernel.clone())
    }

    fn launch(&self, k: &Kernel, args: &[Ptr<'_, Memory>]) -> Result<(), String> {
        if args.len() != k.buffers.len() {
            return Err(format!("kernel {} takes {} buffers, not {}", k.name, k.buffers.len(), args.len()));
        }
        let mut bufs = Vec::with_capacity(args.len());
        for (b, p) in k.buffers.iter().zip(args) {
            bufs.push(elements(&p.buffer.bytes(p.offset, b.len * b.elem.bytes())?, b.elem));
        }
        lsc_kir::gpu::eval::run(k, &mut bufs)?;
        for ((b, p), data) in k.buffers.iter().zip(args).zip(&bufs) {
            if b.output {
                p.buffer.put(p.offset, &bytes(data, b.elem))?;
            }
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<(), String> {
        Ok(())
    }

    fn gemm(&self, g: &Gemm, a: Ptr<'_, Memory>, b: Ptr<'_, Memory>, c: Ptr<'_, Memory>) -> Result<(), String> {
        let (na, nb, nc) = g.extents();
        let av = floats(a, na, g.operands)?;
        let bv = floats(b, nb, g.operands)?;
        let mut cv = floats(c, nc, Elem::F32)?;
        cublas::reference(g, &av, &bv, &mut cv)?;
        let out: Vec<f64> = cv.iter().map(|&x| f64::from(x)).collect();
        c.buffer.put(c.offset, &bytes(&out, Elem::F32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_type_round_trips() {
        let cases = [
            (Elem::F32, vec![1.5, -0.0, f64::from(f32::MIN_POSITIVE / 4.0)]),
            (Elem::BF16, vec![1.5, -2.0, 65280.0]),
            (Elem::F16, vec![0.5, -1.25, 65504.0]),
            (Elem::I32, vec![-7.0, 2147483647.0]),
            (Elem::U32, vec![4294967295.0, 0.0]),
            (Elem::I64, vec![-9.0e15, 3.0]),
            (Elem::U8, vec![255.0, 1.0]),
        ];
        for (elem, values) in cases {
            assert_eq!(elements(&bytes(&values, elem), elem), values, "{elem:?}");
        }
    }

    #[test]
    fn memory_past_an_allocation_is_an_error() {
        let d = Emulated;
        let m = d.alloc(8).unwrap();
        assert!(d.write(Ptr { buffer: &m, offset: 4 }, &[0; 8]).unwrap_err().contains("reach past"));
        assert!(d.read(Ptr { buffer: &m, offset: 0 }, 9).is_err());
    }
}

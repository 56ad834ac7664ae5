//! Bounds-checked access to guest memory, and handing buffers to the guest through its
//! allocator (`malloc` / `proxy_on_memory_allocate`), like cpp-host's `copyToPointerSize`.

use super::C;
use crate::abi::Status;

fn range(ptr: i32, len: i32) -> Option<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize)?;
    Some(start..end)
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub(crate) fn read(caller: &C<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let mem = caller.data().memory?;
    mem.data(caller).get(range(ptr, len)?).map(<[u8]>::to_vec)
}

/// Reads a UTF-8 (lossy) string.
pub(crate) fn read_str(caller: &C<'_>, ptr: i32, len: i32) -> Option<String> {
    read(caller, ptr, len).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Writes `bytes` at `ptr`; false when out of bounds.
pub(crate) fn write(caller: &mut C<'_>, ptr: i32, bytes: &[u8]) -> bool {
    let Some(mem) = caller.data().memory else {
        return false;
    };
    let Ok(len) = i32::try_from(bytes.len()) else {
        return false;
    };
    let Some(r) = range(ptr, len) else {
        return false;
    };
    match mem.data_mut(caller).get_mut(r) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

pub(crate) fn write_u32(caller: &mut C<'_>, ptr: i32, v: u32) -> bool {
    write(caller, ptr, &v.to_le_bytes())
}

pub(crate) fn write_u64(caller: &mut C<'_>, ptr: i32, v: u64) -> bool {
    write(caller, ptr, &v.to_le_bytes())
}

/// Allocates `len` bytes in the guest; `Ok(None)` when the allocator fails or returns memory
/// that is not valid. A trap inside the allocator propagates (it fails the VM, as in Envoy).
pub(crate) fn alloc(caller: &mut C<'_>, len: usize) -> wasmtime::Result<Option<i32>> {
    let Some(f) = caller.data().alloc.clone() else {
        return Ok(None);
    };
    let Ok(len_i) = i32::try_from(len) else {
        return Ok(None);
    };
    let p = f.call(&mut *caller, len_i)?;
    if p == 0 {
        return Ok(None);
    }
    let ok = caller
        .data()
        .memory
        .and_then(|m| range(p, len_i).map(|r| r.end <= m.data_size(&*caller)))
        .unwrap_or(false);
    Ok(ok.then_some(p))
}

/// Hands `bytes` to the guest: allocates a block, copies, and stores its address and length
/// at `ptr_ptr` / `size_ptr`. An empty buffer is (0, 0) with no allocation.
pub(crate) fn copy_out(
    caller: &mut C<'_>,
    bytes: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> wasmtime::Result<Status> {
    let mut addr = 0i32;
    if !bytes.is_empty() {
        match alloc(caller, bytes.len())? {
            Some(p) => {
                if !write(caller, p, bytes) {
                    return Ok(Status::InvalidMemoryAccess);
                }
                addr = p;
            }
            None => return Ok(Status::InvalidMemoryAccess),
        }
    }
    if !write_u32(caller, ptr_ptr, addr as u32) || !write_u32(caller, size_ptr, bytes.len() as u32)
    {
        return Ok(Status::InvalidMemoryAccess);
    }
    Ok(Status::Ok)
}

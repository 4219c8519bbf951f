//! Compiled components on disk, so that loading a plugin the second time skips Cranelift: files
//! named by the SHA-256 of the component's bytes and of the engine's compatibility hash (wasmtime
//! version, target, compiler settings), written atomically.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

pub(crate) struct CompiledCache {
    dir: PathBuf,
    engine_key: [u8; 32],
}

/// A `Hasher` that feeds SHA-256, so the engine's hash is stable across runs (std's is not).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled {
    /// Read from the cache.
    Cached,
    /// Compiled now (and written to the cache when there is one).
    Fresh,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl CompiledCache {
    pub fn open(dir: &Path, engine: &Engine) -> Result<CompiledCache, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the plugin cache {}: {e}", dir.display()))?;
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(CompiledCache {
            dir: dir.to_owned(),
            engine_key: h.0.finalize().into(),
        })
    }

    fn path(&self, wasm: &[u8]) -> PathBuf {
        let mut h = Sha256::new();
        h.update(self.engine_key);
        h.update(wasm);
        self.dir.join(format!("{}.cwasm", hex(&h.finalize())))
    }

    /// Deletes the compiled file of `wasm`, if there is one: a plugin refused at installation
    /// leaves nothing behind.
    pub fn discard(&self, wasm: &[u8]) {
        let path = self.path(wasm);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::warn!(target: "moed_plugins", "cannot delete compiled plugin {}: {e}", path.display());
        }
    }

    /// The compiled component for `wasm`, from the cache or compiled now and stored.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> Result<(Component, Compiled), String> {
        let path = self.path(wasm);
        // Read into memory rather than mapped: a cache file rewritten in place while mapped would
        // crash the process (SIGBUS), and the copy costs little next to compiling.
        if let Ok(bytes) = std::fs::read(&path) {
            // SAFETY: the cache directory belongs to the daemon (its state directory) and holds
            // only files this function wrote, named by the hash of their source and of the engine
            // configuration; wasmtime checks the header and compatibility again. A file that does
            // not load is compiled afresh and replaced.
            match unsafe { Component::deserialize(engine, &bytes) } {
                Ok(c) => return Ok((c, Compiled::Cached)),
                Err(e) => {
                    log::warn!(target: "moed_plugins", "discarding compiled plugin {}: {e:#}", path.display())
                }
            }
        }
        let bytes = engine
            .precompile_component(wasm)
            .map_err(|e| format!("{e:#}"))?;
        // SAFETY: `bytes` was produced by this engine just now.
        let component =
            unsafe { Component::deserialize(engine, &bytes) }.map_err(|e| format!("{e:#}"))?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = path.with_extension(format!(
            "tmp{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Relaxed)
        ));
        let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            // A cache that cannot be written costs time, not correctness.
            let _ = std::fs::remove_file(&tmp);
            log::warn!(target: "moed_plugins", "cannot write compiled plugin {}: {e}", path.display());
        }
        Ok((component, Compiled::Fresh))
    }
}

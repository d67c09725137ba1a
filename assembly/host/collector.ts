// When the module collects its garbage. Filters build with AssemblyScript's minimal runtime
// (asconfig.json): its collector runs only when called, so the compiler keeps no shadow stack of
// managed locals, bookkeeping that made every module a third larger and every call dearer. The
// collector may run only when no managed object is referenced from the Wasm stack alone; the end of
// a host callback is such a moment, since everything kept between callbacks hangs off the context
// table or another global.
//
// The runtime does not say how much a callback allocated, so the budget charges what drives it: the
// bytes the host wrote into the module (a body's garbage grows with its size) and a fixed amount per
// callback for the rest. Measured with a bump allocator in Envoy on the demo's small chat requests, a
// callback allocates 16 B to 19 KB beyond the host's bytes, 4 KB in the mean.

/** Allocation between collections: about 250 callbacks of small requests, or 8 bodies of 128 KB. */
const COLLECTION_BUDGET: usize = 1 << 20;
const CHARGE_PER_CALLBACK: usize = 4096;

let chargedSinceCollection: usize = 0;

/** Counts bytes the host wrote into the module (its malloc calls). */
export function noteHostBytes(size: usize): void {
  chargedSinceCollection += size;
}

/** Charges the callback that is ending and collects when the budget is spent; call it only as a callback's last step. */
export function collectWhenDue(): void {
  chargedSinceCollection += CHARGE_PER_CALLBACK;
  if (chargedSinceCollection < COLLECTION_BUDGET) return;
  chargedSinceCollection = 0;
  __collect();
}

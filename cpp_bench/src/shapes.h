// Resolves the concrete input shapes of a run from --shapes and the model's declared shapes.
#pragma once

#include "backend.h"
#include "tensor.h"

namespace ifseg_bench {

/// One concrete shape per model input: the --shapes entry (checked against the declared rank, static
/// dimensions and the backend's limits), else the declared static shape, else the backend's default.
/// Throws UsageError naming the input and what to pass.
ShapeMap resolve_shapes(const Backend& backend, const ShapeMap& requested);

}  // namespace ifseg_bench

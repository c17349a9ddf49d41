#include "core/common/torch_status.h"

#include <c10/util/Exception.h>

#include <exception>
#include <string>

#include "absl/strings/str_cat.h"

namespace qatd {

absl::Status CatchTorch(const char* what, const std::function<absl::Status()>& fn) {
  try {
    return fn();
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory: ", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

}  // namespace qatd

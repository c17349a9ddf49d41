#pragma once
// The daemon's version string (the CMake project version).

namespace qatd::server {
#ifdef QATD_VERSION_STRING
inline constexpr char kQatdVersion[] = QATD_VERSION_STRING;
#else
inline constexpr char kQatdVersion[] = "dev";
#endif
}  // namespace qatd::server

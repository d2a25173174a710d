//! Root package: owns examples/ and tests/.

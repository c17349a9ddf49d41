#pragma once
// Kept for existing includers: the pieces the trainers share now live one concept per header.
// New code includes what it uses:
//   trainable.h    SelectV2Forward, TrainableParameters
//   held_out.h     HeldOutSplits
//   json_file.h    ReadJson
//   loss_values.h  LossValues, LossWindow
//   train_step.h   RunMicroBatches, ApplyStep
//   train_log.h    TrainLog (training_log.csv)
//   resume_state.h TrainPaths, ResumeState, ResumeDir (the resume/ directory)

#include "core/train/held_out.h"
#include "core/train/json_file.h"
#include "core/train/loss_values.h"
#include "core/train/resume_state.h"
#include "core/train/train_log.h"
#include "core/train/train_step.h"
#include "core/train/trainable.h"

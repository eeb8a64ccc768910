/* Every op, one header each; include this to get them all. */
#pragma once
#include "activation.h"
#include "conv2d.h"
#include "elementwise.h"
#include "linear.h"
#include "reduce.h"
#include "tape.h"
#include "shape.h"
#include "conv1d.h"
#include "upsample.h"
#include "norm.h"
#include "softmax.h"
#include "attention.h"

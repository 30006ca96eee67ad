/// \file
/// The coroutine layer in one include: Task and spawn() (coro_task.h),
/// Stream (coro_stream.h), Acceptor (coro_acceptor.h) and connect()
/// (coro_connect.h). A thin, optional layer over the reactor's callbacks:
/// one loop per thread, a task runs on the loop of its connection.
#pragma once

#include "tcpkit/coro_acceptor.h"
#include "tcpkit/coro_connect.h"
#include "tcpkit/coro_stream.h"
#include "tcpkit/coro_task.h"

"""Scripted demonstrations for FrankaKitchen-v1: one controller per subtask, chained in a task order.

The env (gymnasium-robotics 1.4, ``franka_kitchen/franka_env.py``) takes a 9-dim action in
[-1, 1]: seven arm joints and two fingers. It scales it by ``act_rng = 2`` into a joint velocity
(rad/s, m/s for the fingers), and the position actuators receive the target
``q_observed + velocity * dt`` with ``dt = 0.08`` s (40 substeps of 2 ms), clipped to the joint
bounds of ``franka_config.xml``. One unit of action is therefore a joint-target offset of
``act_rng * dt = 0.16`` rad per step.

The controllers here work in the end effector's Cartesian space and turn a wanted pose into that
action with damped-least-squares inverse kinematics on MuJoCo's Jacobian of the ``end_effector``
site (:class:`Arm`). The actuators are stiff position servos (kp 870 / 120) against heavy joint
damping (100 / 10), so the offset a joint needs is larger than the motion wanted in one step and
must also hold the arm against gravity; :meth:`Arm.action` adds both terms from the model
(``dof_damping / (kp dt)`` per rad of motion per step, ``qfrc_bias / kp``).

A subtask (:class:`JointTask` for the hinged and sliding objects, :class:`KettleTask` for the
kettle) is a list of :class:`Phase`: a joint-space transit to a posture near the object (solved
by IK from a reference posture found offline), a Cartesian approach to a pre-contact pose 10 cm
back along the gripper's approach axis, a slow alignment 4 cm short of the contact, the contact,
closing the fingers where it grasps, the motion along the object's joint, release and back-off.
Targets come from the live simulation state (the object's sites and joint anchors), so a
controller follows what the action noise does to the arm and the object. How each object is
handled:

* microwave, slide cabinet, hinge cabinet: grasp the vertical handle and pull it along the door's
  arc (the slide's line); a grasp that creeps loose (MuJoCo's soft contacts) is renewed;
* light switch, bottom and top burner: push with the closed fingertips (the switch lever sideways;
  the knob's vertical bar at one end, which turns the knob), lining up again if the push slips;
* kettle: grasp its handle bar, lift, carry 25 cm toward the back burner, set down, back off.

The success test is the env's own: the subtask's object coordinates (``OBS_ELEMENT_INDICES``)
within ``BONUS_THRESH`` (L2) of ``OBS_ELEMENT_GOALS``.

:class:`ScriptedPolicy` chains subtask controllers in a given order and adds Gaussian noise to the
actions; :func:`run_subtask_trials` measures one controller's success rate alone.

The controllers read the simulator state through ``env.unwrapped`` (privileged information, as a
scripted expert does); the actions they produce are ordinary env actions.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

EE_SITE = "end_effector"
N_ARM = 7

SUBTASKS: tuple[str, ...] = (
    "microwave",
    "kettle",
    "bottom burner",
    "top burner",
    "light switch",
    "slide cabinet",
    "hinge cabinet",
)
"""The seven FrankaKitchen-v1 subtasks, with the env's names (``OBS_ELEMENT_GOALS`` keys)."""

WITHDRAW_Y = 0.45
"""Before moving to a new subtask the hand first backs off to at most this y (m): the kitchen's
front (handles, knobs, the light switch) lies at y ~0.5-0.6."""

OPEN, CLOSED = 1.0, -1.0
"""Finger actions: +1 opens the gripper (fingers to 0.04 m each), -1 closes it."""

# Gripper orientation "forward": the approach axis (site z) along world +y, toward the kitchen, the
# fingers opening along world x and the site's x axis up. Columns are the site axes in world.
R_FORWARD = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def grip_rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """(3, 3) gripper orientation: :data:`R_FORWARD` rolled by ``roll`` about its approach axis
    (world y), pitched down by ``pitch`` about world x, then turned by ``yaw`` about world z."""
    return rot_about([0.0, 0.0, 1.0], yaw) @ rot_about([1.0, 0.0, 0.0], -pitch) @ rot_about([0.0, 1.0, 0.0], roll) @ R_FORWARD


def _env_constants() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    from ractd_cli.adapters import quiet_import

    env = quiet_import("gymnasium_robotics.envs.franka_kitchen.kitchen_env")  # its package prints a notice on import
    return dict(env.OBS_ELEMENT_INDICES), dict(env.OBS_ELEMENT_GOALS), float(env.BONUS_THRESH)


def rot_about(axis: Sequence[float], angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` (rad) about the unit vector ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def rot_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """(3,) rotation vector (axis * angle, world frame) that turns ``current`` into ``target``."""
    e = target @ current.T
    cos = np.clip((np.trace(e) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos))
    v = np.array([e[2, 1] - e[1, 2], e[0, 2] - e[2, 0], e[1, 0] - e[0, 1]])
    s = np.linalg.norm(v)
    if s < 1e-9:
        if angle < 1e-6:
            return np.zeros(3)
        # 180 degrees: the axis is the eigenvector of e with eigenvalue 1
        w, vec = np.linalg.eigh((e + e.T) / 2.0)
        return vec[:, int(np.argmax(w))] * angle
    return v / s * angle


class Arm:
    """The Franka arm of one FrankaKitchen env: end-effector pose, and the action that moves it.

    ``env``: a FrankaKitchen-v1 env (any wrapper; ``env.unwrapped`` must be the KitchenEnv).
    Arrays: positions (3,), rotation matrices (3, 3), joint vectors (7,), actions (9,).
    ``rest`` (7,) is the posture that the redundant degree of freedom is pulled toward.
    """

    def __init__(self, env: Any, *, damping: float = 0.1, joint_margin: float = 0.05):
        mujoco = _mujoco()
        u = env.unwrapped
        self.model, self.data = u.model, u.data
        robot = u.robot_env
        self.dt = float(robot.dt)
        self.step_scale = np.asarray(robot.act_rng[:N_ARM], dtype=float) * self.dt  # rad of target offset per unit action
        self.kp = self.model.actuator_gainprm[:N_ARM, 0].copy()
        # offset per rad of motion wanted in one step: steady state of kp * offset = damping * qdot
        self.lag = self.model.dof_damping[:N_ARM] / (self.kp * self.dt)
        lo = np.maximum(self.model.jnt_range[:N_ARM, 0], robot.robot_pos_bound[:N_ARM, 0])
        hi = np.minimum(self.model.jnt_range[:N_ARM, 1], robot.robot_pos_bound[:N_ARM, 1])
        self.lo, self.hi = lo + joint_margin, hi - joint_margin
        self.site = self.model.site(EE_SITE).id
        self.damping = damping
        self.home = np.asarray(robot.init_qpos[:N_ARM], dtype=float).copy()
        self.rest = self.home.copy()
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))
        self._scratch = mujoco.MjData(self.model)

    # -- state ---------------------------------------------------------------------------------

    @property
    def q(self) -> np.ndarray:
        return self.data.qpos[:N_ARM].copy()

    def pos(self, data: Any = None) -> np.ndarray:
        return (data or self.data).site_xpos[self.site].copy()

    def rot(self, data: Any = None) -> np.ndarray:
        return (data or self.data).site_xmat[self.site].reshape(3, 3).copy()

    def fingers(self) -> float:
        """Gripper opening (m): the sum of the two finger joints (0 closed, 0.08 wide open)."""
        return float(self.data.qpos[7] + self.data.qpos[8])

    # -- inverse kinematics --------------------------------------------------------------------

    def joint_motion(
        self, pos: np.ndarray, rot: np.ndarray | None, *, max_lin: float, max_ang: float, data: Any = None,
        null_gain: float = 0.05,
    ) -> np.ndarray:
        """(7,) joint displacement for one step toward the pose: DLS IK on the clipped Cartesian
        error, joints that would cross their limits locked there, a pull toward ``rest`` in the
        null space. ``rot`` None: position only."""
        mujoco = _mujoco()
        data = self.data if data is None else data
        ep = np.asarray(pos, dtype=float) - self.pos(data)
        n = np.linalg.norm(ep)
        if n > max_lin:
            ep *= max_lin / n
        mujoco.mj_jacSite(self.model, data, self._jacp, self._jacr, self.site)
        if rot is None:
            jac, err = self._jacp[:, :N_ARM].copy(), ep
        else:
            er = rot_error(rot, self.rot(data))
            n = np.linalg.norm(er)
            if n > max_ang:
                er *= max_ang / n
            jac = np.vstack([self._jacp[:, :N_ARM], self._jacr[:, :N_ARM]])
            err = np.concatenate([ep, er])
        q = data.qpos[:N_ARM].copy()
        free = np.ones(N_ARM, dtype=bool)
        dq = np.zeros(N_ARM)
        for _ in range(4):
            jf = jac[:, free]
            resid = err - jac[:, ~free] @ dq[~free]
            inv = jf.T @ np.linalg.inv(jf @ jf.T + self.damping**2 * np.eye(len(err)))
            sol = inv @ resid
            sol += (np.eye(int(free.sum())) - inv @ jf) @ (null_gain * (self.rest - q)[free])
            dq[free] = sol
            q_new = q + dq
            out = free & ((q_new < self.lo) | (q_new > self.hi))
            if not out.any():
                break
            dq[out] = np.clip(q_new[out], self.lo[out], self.hi[out]) - q[out]
            free &= ~out
        return dq

    def solve(self, pos: np.ndarray, rot: np.ndarray | None, seed: np.ndarray, iters: int = 150) -> tuple[np.ndarray, float]:
        """(7,) posture reaching (``pos``, ``rot``), found by iterating :meth:`joint_motion` from
        ``seed`` on a scratch copy of the model (the env is untouched); and its position error (m)."""
        mujoco = _mujoco()
        d = self._scratch
        d.qpos[:] = self.data.qpos
        d.qpos[:N_ARM] = np.clip(seed, self.lo, self.hi)
        for _ in range(iters):
            mujoco.mj_kinematics(self.model, d)
            mujoco.mj_comPos(self.model, d)
            d.qpos[:N_ARM] += self.joint_motion(pos, rot, max_lin=0.03, max_ang=0.15, data=d)
        mujoco.mj_kinematics(self.model, d)
        return d.qpos[:N_ARM].copy(), float(np.linalg.norm(self.pos(d) - pos))

    # -- actions -------------------------------------------------------------------------------

    def _to_action(self, dq: np.ndarray, grip: float) -> np.ndarray:
        offset = dq * (1.0 + self.lag) + self.data.qfrc_bias[:N_ARM] / self.kp
        a = np.empty(9)
        a[:N_ARM] = offset / self.step_scale
        a[7:] = grip
        return np.clip(a, -1.0, 1.0)

    def action(
        self, pos: np.ndarray, rot: np.ndarray | None, grip: float, *, max_lin: float = 0.05, max_ang: float = 0.3
    ) -> np.ndarray:
        """(9,) env action in [-1, 1] moving the end effector toward (``pos``, ``rot``) by at most
        ``max_lin`` m and ``max_ang`` rad this step, fingers by ``grip`` (+1 open, -1 closed)."""
        return self._to_action(self.joint_motion(pos, rot, max_lin=max_lin, max_ang=max_ang), grip)

    def joint_action(self, q_goal: np.ndarray, grip: float, *, max_step: float = 0.08) -> np.ndarray:
        """(9,) env action moving the arm straight toward posture ``q_goal`` (7,) in joint space,
        at most ``max_step`` rad per joint this step."""
        dq = np.clip(np.asarray(q_goal) - self.q, -max_step, max_step)
        return self._to_action(dq, grip)


def _mujoco() -> Any:
    import mujoco

    return mujoco


# -------------------------------------------------------------------------------------------------
# Phases and subtask controllers
# -------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Phase:
    """One stage of a subtask: move toward a target with the fingers at ``grip`` until ``done()``
    holds or ``max_steps`` steps have passed.

    ``target() -> (pos (3,), rot (3, 3) or None)``, a Cartesian target reached at most ``max_lin``
    m per step; or ``joints() -> (7,)``, a posture reached in joint space. ``done() -> bool``.
    """

    name: str
    grip: float
    done: Callable[[], bool]
    max_steps: int
    target: Callable[[], tuple[np.ndarray, np.ndarray | None]] | None = None
    joints: Callable[[], np.ndarray] | None = None
    max_lin: float = 0.05
    then: Callable[[], list["Phase"]] | None = None  # phases to insert after this one when it ends


class Subtask:
    """A scripted controller for one subtask: a sequence of :class:`Phase`.

    ``act() -> (9,)`` action for the current step (noise-free); ``finished`` once the last phase
    ended; ``succeeded()`` whether the env's completion test holds now. ``orient`` (yaw, pitch,
    roll; :func:`grip_rotation`) is the gripper orientation at contact and ``posture`` (7,) the arm
    posture near the contact that inverse kinematics is seeded with and drawn toward (both chosen
    offline by a search over postures for good joint-limit margins along the whole motion).
    """

    name: str = ""
    orient: tuple[float, float, float] = (0.0, 0.0, 0.0)
    posture = np.zeros(N_ARM)

    def __init__(self, arm: Arm):
        self.arm = arm
        indices, goals, thresh = _env_constants()
        self.index, self.goal, self.thresh = indices[self.name], goals[self.name], thresh
        self.phases: list[Phase] = []
        self.k = 0
        self.t = 0
        self.started = False
        self.log: list[tuple[str, int]] = []  # (phase, steps spent) of each phase ended

    @property
    def finished(self) -> bool:
        return self.started and self.k >= len(self.phases)

    @property
    def phase(self) -> str:
        if not self.started:
            return "start"
        return self.phases[self.k].name if self.k < len(self.phases) else "done"

    def obj(self) -> np.ndarray:
        """The subtask's object coordinates (qpos at ``OBS_ELEMENT_INDICES``)."""
        return self.arm.data.qpos[self.index].copy()

    def distance(self) -> float:
        """L2 distance of the object coordinates to the goal (the env's completion test: < 0.3)."""
        return float(np.linalg.norm(self.obj() - self.goal))

    def succeeded(self) -> bool:
        return self.distance() < self.thresh

    def build(self) -> list[Phase]:
        raise NotImplementedError

    def act(self) -> np.ndarray:
        if not self.started:
            self.arm.rest = np.asarray(self.posture, dtype=float).copy()
            self.phases = self.build()
            self.started = True
        while self.k < len(self.phases):
            ph = self.phases[self.k]
            if self.t >= ph.max_steps or ph.done():
                self.log.append((ph.name, self.t))
                self.k += 1
                self.t = 0
                if ph.then is not None:
                    self.phases[self.k:self.k] = ph.then()
                continue
            self.t += 1
            if ph.joints is not None:
                return self.arm.joint_action(ph.joints(), ph.grip)
            pos, rot = ph.target()
            return self.arm.action(pos, rot, ph.grip, max_lin=ph.max_lin)
        return self.arm.action(self.arm.pos(), None, OPEN)

    # -- phase helpers ---------------------------------------------------------------------------

    def near(self, target: Callable[[], tuple[np.ndarray, Any]], tol: float) -> Callable[[], bool]:
        return lambda: bool(np.linalg.norm(self.arm.pos() - target()[0]) < tol)

    def transit(self, target: Callable[[], tuple[np.ndarray, np.ndarray]], grip: float) -> list[Phase]:
        """Get to ``target`` from wherever the last subtask left the arm: first withdraw the hand
        toward the robot (y <= :data:`WITHDRAW_Y`) and up to the target's height if it is lower
        (a straight joint-space sweep across the kitchen front once flicked the light switch on
        the way), then a joint-space move to the posture, solved once from :attr:`posture`, that
        reaches ``target``."""
        pos, rot = target()
        q_goal, _ = self.arm.solve(pos, rot, self.posture)
        start = self.arm.pos()
        via = np.array([start[0], min(start[1], WITHDRAW_Y), max(start[2], pos[2])])
        return [
            Phase("withdraw", grip, self.near(lambda: (via, None), 0.03), 12, target=lambda: (via, None), max_lin=0.04),
            Phase("transit", grip, lambda: bool(np.max(np.abs(self.arm.q - q_goal)) < 0.06), 45, joints=lambda: q_goal),
        ]

    @staticmethod
    def frozen(target: Callable[[], Any]) -> Callable[[], Any]:
        """``target`` evaluated once, on its first call, then held: a pose that no longer follows
        the object (letting go and backing off must not chase an object that the fingers nudge)."""
        memo: list[Any] = []

        def held() -> Any:
            if not memo:
                memo.append(target())
            return memo[0]

        return held

    def settled(self, target: Callable[[], tuple[np.ndarray, Any]], tol: float, loose: float) -> Callable[[], bool]:
        """Done when the gripper is within ``tol`` of the target, or has stopped (moved < 2 mm over
        3 steps) within ``loose`` of it: a contact that the object itself blocks."""
        trail: list[np.ndarray] = []

        def done() -> bool:
            p = self.arm.pos()
            trail.append(p)
            err = float(np.linalg.norm(p - target()[0]))
            stopped = len(trail) > 3 and float(np.linalg.norm(trail[-1] - trail[-4])) < 0.002
            return err < tol or (stopped and err < loose)

        return done

    def hand(self) -> tuple[np.ndarray, np.ndarray]:
        """The gripper's current pose."""
        return self.arm.pos(), self.arm.rot()

    def grasping(self, target: Callable[[], tuple[np.ndarray, np.ndarray]], steps: int = 4) -> Phase:
        count = {"n": 0}

        def done() -> bool:
            count["n"] += 1
            return count["n"] > steps

        return Phase("close", CLOSED, done, steps + 1, target=target)


class JointTask(Subtask):
    """A hinged or sliding object moved through a contact point on it.

    Subclasses set ``joint`` (the MuJoCo joint moved), ``site`` (a site on the moving body),
    ``contact`` (offset of the contact point from the site, world frame, at the start), ``approach``
    and ``retreat`` (pre-contact and back-off points minus the contact point, world), ``grasp``
    (close the fingers on the contact, or push with closed fingers), ``aim`` (joint value to drive
    to), ``lead`` (how far ahead of the current joint value the moving target is, rad or m) and
    ``stop`` (joint distance to ``aim`` at which the move ends). A grasp that slips (MuJoCo's soft
    contacts let a handle creep out of the fingers under a steady pull) stalls the move; the
    controller then lets go, grasps again where the handle now is and pulls on, up to ``regrasps``
    times.

    The contact frame is attached to the moving body: while moving, the target is that frame carried
    by the joint to ``q + lead`` (a rotation about the joint axis through its anchor, or a
    translation along it), so the gripper follows the handle's arc.
    """

    joint: str = ""
    site: str = ""
    contact = np.zeros(3)
    approach: np.ndarray | None = None  # None: 10 cm back along the gripper's approach axis
    retreat: np.ndarray | None = None
    grasp = True
    aim = 0.0
    lead = 0.3
    stop = 0.05
    move_steps = 60
    move_speed = 0.025
    regrasps = 0
    stall = 0.01  # a move that gained less than this (rad or m) over 4 steps has stalled
    turn = True  # the gripper turns with a hinged object (a grasp); False: it keeps its orientation (a push)

    def __init__(self, arm: Arm):
        super().__init__(arm)
        m = arm.model
        self.jid = m.joint(self.joint).id
        self.qadr = int(m.jnt_qposadr[self.jid])
        self.hinge = int(m.jnt_type[self.jid]) == int(_mujoco().mjtJoint.mjJNT_HINGE)
        self.sid = m.site(self.site).id

    def jq(self) -> float:
        return float(self.arm.data.qpos[self.qadr])

    def carried(self, p: np.ndarray, r: np.ndarray, dq: float) -> tuple[np.ndarray, np.ndarray]:
        """Pose (p, r) moved with the object by a joint change of ``dq``."""
        d = self.arm.data
        axis = d.xaxis[self.jid].copy()
        if self.hinge:
            rot = rot_about(axis, dq)
            anchor = d.xanchor[self.jid].copy()
            return anchor + rot @ (p - anchor), (rot @ r if self.turn else r)
        return p + axis * dq, r

    def build(self) -> list[Phase]:
        d = self.arm.data
        r0 = grip_rotation(*self.orient)
        # Offsets and orientation are defined on the object at rest (its model default); an object
        # that an earlier subtask has nudged is carried back to rest to place them, then forward.
        q0 = float(self.arm.model.qpos0[self.qadr])
        site_at_rest, _ = self.carried(d.site_xpos[self.sid].copy(), r0, q0 - self.jq())
        contact0 = site_at_rest + self.contact

        def contact_now() -> tuple[np.ndarray, np.ndarray]:
            return self.carried(contact0, r0, self.jq() - q0)

        approach = -0.1 * r0[:, 2] if self.approach is None else self.approach
        retreat = approach if self.retreat is None else self.retreat

        def pre() -> tuple[np.ndarray, np.ndarray]:
            p, r = contact_now()
            return p + approach, r

        def moving() -> tuple[np.ndarray, np.ndarray]:
            step = float(np.clip(self.aim - self.jq(), -self.lead, self.lead))
            p, r = contact_now()
            return self.carried(p, r, step)

        def back_from(pose: Callable[[], tuple[np.ndarray, np.ndarray]]) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
            def back() -> tuple[np.ndarray, np.ndarray]:
                p, r = pose()
                return p + r @ (r0.T @ retreat), r  # the back-off direction turns with the gripper
            return back

        grip = OPEN if self.grasp else CLOSED
        reached = lambda: abs(self.jq() - self.aim) < self.stop  # noqa: E731
        left = {"regrasps": self.regrasps}

        def move() -> Phase:
            history: list[float] = []

            def done() -> bool:
                history.append(self.jq())
                stalled = len(history) > 8 and abs(history[-1] - history[-5]) < self.stall
                return reached() or stalled

            return Phase("move", CLOSED, done, self.move_steps, target=moving, max_lin=self.move_speed, then=again)

        def again() -> list[Phase]:
            if reached() or left["regrasps"] <= 0:
                return []
            left["regrasps"] -= 1
            if self.grasp:  # let go, grasp the handle where it is now, pull on
                return [
                    Phase("release", OPEN, lambda: self.arm.fingers() > 0.06, 4, target=self.frozen(self.hand)),
                    Phase("contact", OPEN, self.near(contact_now, 0.012), 8, target=contact_now, max_lin=0.03),
                    self.grasping(contact_now, 3),
                    move(),
                ]
            # a push that slipped off: back off, line up with the object where it is now, push on
            redo = self.frozen(contact_now)
            lined_up = self.frozen(lambda: (redo()[0] + 0.4 * (redo()[1] @ (r0.T @ approach)), redo()[1]))
            return [
                Phase("align", CLOSED, self.near(lined_up, 0.008), 10, target=lined_up, max_lin=0.02),
                Phase("contact", CLOSED, self.settled(redo, 0.012, 0.025), 10, target=redo, max_lin=0.025),
                move(),
            ]

        retries = {"n": 2}
        # A push starts where the object is at rest; the object moves under the push.
        touch = contact_now if self.grasp else self.frozen(contact_now)

        def reach() -> Phase:
            return Phase("contact", grip, self.settled(touch, 0.012, 0.025), 20, target=touch, max_lin=0.025, then=missed)

        def missed() -> list[Phase]:  # a finger landed on the handle instead of beside it: back off, try again
            if not self.grasp or retries["n"] <= 0 or np.linalg.norm(self.arm.pos() - contact_now()[0]) < 0.025:
                return []
            retries["n"] -= 1
            return [Phase("approach", grip, self.near(pre, 0.012), 15, target=pre),
                    Phase("align", grip, self.near(align, 0.006), 12, target=align, max_lin=0.02), reach()]

        def align() -> tuple[np.ndarray, np.ndarray]:  # 4 cm short of the contact, on the approach line
            p, r = touch()
            return p + 0.4 * (r @ (r0.T @ approach)), r

        phases = [
            *self.transit(pre, grip),
            Phase("approach", grip, self.near(pre, 0.012), 25, target=pre),
            Phase("align", grip, self.near(align, 0.006), 12, target=align, max_lin=0.02),
            reach(),
        ]
        if self.grasp:
            phases.append(self.grasping(contact_now))
        let_go = self.frozen(self.hand)
        back = self.frozen(back_from(let_go))
        phases += [
            move(),
            Phase("release", OPEN, lambda: not self.grasp or self.arm.fingers() > 0.06, 4, target=let_go),
            Phase("retreat", OPEN, self.near(back, 0.03), 15, target=back),
        ]
        return phases


class Microwave(JointTask):
    """Open the microwave door: grasp the vertical handle, swing it about the door hinge toward -0.75 rad."""

    name = "microwave"
    joint = "microwave"
    site = "microhandle_site"
    orient = (0.5, 0.6, np.pi)
    posture = np.array([-1.67, -1.275, 2.229, -1.341, -1.115, 1.702, -1.029])
    contact = np.array([0.0, 0.0, 0.07])  # the upper part of the handle
    aim = -0.7
    lead = 0.08
    stop = 0.08
    regrasps = 2


class SlideCabinet(JointTask):
    """Open the sliding cabinet: grasp its vertical handle and pull it along +x."""

    name = "slide cabinet"
    joint = "slide_cabinet"
    site = "slide_site"
    orient = (-0.4, 0.4, 0.0)
    posture = np.array([-1.143, -0.373, 1.12, -1.46, -0.239, 0.78, 0.619])
    aim = 0.4
    lead = 0.08
    stop = 0.03


class HingeCabinet(JointTask):
    """Open the right door of the hinged cabinet: grasp its handle and swing it toward 1.45 rad,
    the gripper keeping its orientation (the handle turns in the grasp)."""

    name = "hinge cabinet"
    joint = "right_hinge_cabinet"
    site = "hinge_site2"
    orient = (0.4, 0.0, 0.0)
    posture = np.array([-1.669, -0.776, 1.761, -0.982, 0.622, 1.277, 0.172])
    turn = False
    aim = 1.5
    lead = 0.15
    move_speed = 0.03
    stop = 0.08
    regrasps = 4


class LightSwitch(JointTask):
    """Switch the light on: push the switch lever from its +x side to the left (-x), fingers closed."""

    name = "light switch"
    joint = "light_switch"
    site = "light_site"
    orient = (-0.4, 0.8, 0.0)
    posture = np.array([-1.39, -0.79, 1.599, -1.639, 0.297, 0.697, 0.748])
    contact = np.array([0.045, 0.0, 0.0])  # right of the lever (radius 2.1 cm), with room for the fingers
    grasp = False
    turn = False
    regrasps = 2
    aim = -0.7
    lead = 0.3
    stop = 0.05


class _Burner(JointTask):
    """Turn an oven knob: push the upper end of its vertical bar sideways (+x) with the closed
    fingertips, so the bar turns about the knob axis. (A pinch on the bar's narrow sides cannot
    twist it: the torque would come from friction alone, and MuJoCo's soft contacts let it creep.)

    The bar is 2.8 cm wide, 9.6 cm tall and stands 3.6 cm proud of its base plate; the contact
    point is 3 cm left of the knob axis and 3.5 cm above it, 4.6 cm in front of the bar's centre
    (the ``end_effector`` site sits that far behind the fingertips).
    """

    orient = (0.0, 0.0, np.pi)
    contact = np.array([-0.03, -0.046, 0.035])
    grasp = False
    turn = False
    regrasps = 2
    aim = -1.0
    lead = 0.6
    stop = 0.1


class BottomBurner(_Burner):
    """The bottom knob is pushed at the lower end of its bar, toward -x (the same turn), which
    keeps the fingers clear of the top knob's bar once that one has been turned."""

    name = "bottom burner"
    joint = "knob_Joint_2"
    site = "knob2_site"
    contact = np.array([0.03, -0.046, -0.035])
    posture = np.array([-1.466, -1.192, 1.531, -1.862, -2.529, 1.246, 0.594])


class TopBurner(_Burner):
    name = "top burner"
    joint = "knob_Joint_4"
    site = "knob4_site"
    posture = np.array([-1.494, -0.657, 1.548, -1.659, -2.403, 1.515, -0.082])


class KettleTask(Subtask):
    """Move the kettle toward the top-left burner: grasp its handle bar (fingers above and below
    it), lift it a little, carry it ``carry`` m along +y, set it down and let go.

    The completion test needs the kettle's 7 coordinates within 0.3 of the goal; with the kettle
    upright at the goal's x and height that means y > ~0.46 (it starts at 0.35, the goal is 0.75),
    so a carry of 0.25 m suffices and stays inside the arm's comfortable reach.
    """

    name = "kettle"
    orient = (-0.4, 0.5, -np.pi / 2)
    posture = np.array([-0.789, -1.134, 1.976, -2.653, -0.334, 1.425, 0.55])
    lift = 0.08
    carry = (0.04, 0.25)  # (x, y) displacement (m): +x keeps the kettle clear of the microwave

    def build(self) -> list[Phase]:
        d, m = self.arm.data, self.arm.model
        sid = m.site("kettle_site").id
        r0 = grip_rotation(*self.orient)
        handle0 = d.site_xpos[sid].copy()
        up = np.array([0.0, 0.0, self.lift])
        shift = np.array([self.carry[0], self.carry[1], 0.0])
        approach = -0.1 * r0[:, 2]  # back along the approach axis

        def handle():
            return d.site_xpos[sid].copy(), r0

        def pre():
            return handle()[0] + approach, r0

        def lifted():
            return handle0 + up, r0

        def over():
            return handle0 + shift + up, r0

        def down():
            return handle0 + shift + np.array([0.0, 0.0, 0.005]), r0

        let_go = self.frozen(self.hand)

        flat = np.array([r0[0, 2], r0[1, 2], 0.0])
        flat /= np.linalg.norm(flat)  # the approach direction, horizontal

        def back():  # back off horizontally: the open fingers slide off the bar (along -approach
            p, r = let_go()  # they would rise and could lift it; along -y they would rub a post)
            return p - 0.15 * flat, r

        def clear():  # then up, out of the kettle's way
            p, r = back()
            return p + np.array([0.0, 0.0, 0.05]), r

        return [
            *self.transit(pre, OPEN),
            Phase("approach", OPEN, self.near(pre, 0.02), 25, target=pre),
            Phase("contact", OPEN, self.near(handle, 0.012), 20, target=handle, max_lin=0.03),
            self.grasping(handle),
            Phase("lift", CLOSED, self.near(lifted, 0.015), 15, target=lifted, max_lin=0.02),
            Phase("carry", CLOSED, self.near(over, 0.02), 30, target=over, max_lin=0.03),
            Phase("lower", CLOSED, self.near(down, 0.012), 15, target=down, max_lin=0.02),
            Phase("release", OPEN, lambda: self.arm.fingers() > 0.078, 6, target=let_go),
            Phase("retreat", OPEN, self.near(back, 0.02), 12, target=back, max_lin=0.03),
            Phase("clear", OPEN, self.near(clear, 0.03), 8, target=clear),
        ]


CONTROLLERS: dict[str, type[Subtask]] = {
    c.name: c for c in (Microwave, KettleTask, BottomBurner, TopBurner, LightSwitch, SlideCabinet, HingeCabinet)
}


# -------------------------------------------------------------------------------------------------
# Chaining subtasks, with action noise
# -------------------------------------------------------------------------------------------------

BLOCKS: dict[str, tuple[str, ...]] = {"hinge cabinet": ("slide cabinet", "light switch", "top burner", "bottom burner")}
"""Subtask -> subtasks it gets in the way of once done: the opened hinge-cabinet door swings out
beside the slide cabinet's handle and above the light switch and the knobs, across the paths the
controllers take to them (measured: those subtasks failed after it in about a third of chains)."""


def feasible_order(order: Sequence[str]) -> list[str]:
    """``order`` with each subtask of :data:`BLOCKS` that comes before a subtask it blocks moved to
    just after the last of them (the others keep their relative order). (n,) names -> (n,) names."""
    out = list(order)
    for blocker, blocked in BLOCKS.items():
        if blocker not in out:
            continue
        i = out.index(blocker)
        later = [j for j, t in enumerate(out) if t in blocked and j > i]
        if later:
            out.pop(i)
            out.insert(later[-1], blocker)
    return out


class ScriptedPolicy:
    """The subtask controllers of ``order`` run one after the other, with Gaussian action noise.

    ``env``: a FrankaKitchen-v1 env, just reset. ``policy(obs=None) -> (9,) float64`` is the
    action for the next step: the current controller's action plus N(0, ``noise``^2) per
    coordinate (``rng``), clipped to [-1, 1]. Once every controller has ended, the arm holds its
    pose (fingers open) and ``finished`` is True. ``outcomes`` lists, per subtask run so far,
    ``(name, succeeded at hand-over, steps)``.
    """

    def __init__(self, env: Any, order: Sequence[str], *, noise: float = 0.1, rng: np.random.Generator | None = None):
        unknown = [t for t in order if t not in CONTROLLERS]
        if unknown:
            raise ValueError(f"unknown subtasks {unknown}; known: {list(CONTROLLERS)}")
        self.arm = Arm(env)
        self.order = list(order)
        self.noise = float(noise)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.i = 0
        self.ctrl: Subtask | None = None
        self.steps = 0
        self.outcomes: list[tuple[str, bool, int]] = []
        self._hold: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def finished(self) -> bool:
        return self.i >= len(self.order)

    @property
    def current(self) -> str | None:
        return None if self.finished else self.order[self.i]

    def clean_action(self) -> np.ndarray:
        """(9,) the noise-free action of this step (advances the controllers)."""
        while self.i < len(self.order):
            if self.ctrl is None:
                self.ctrl = CONTROLLERS[self.order[self.i]](self.arm)
                self.steps = 0
            a = self.ctrl.act()
            if not self.ctrl.finished:
                self.steps += 1
                return a
            self.outcomes.append((self.ctrl.name, self.ctrl.succeeded(), self.steps))
            self.i += 1
            self.ctrl = None
        if self._hold is None:
            self._hold = (self.arm.pos(), self.arm.rot())
        return self.arm.action(self._hold[0], self._hold[1], OPEN)

    def __call__(self, obs: Any = None) -> np.ndarray:
        a = self.clean_action()
        if self.noise > 0:
            a = a + self.rng.normal(0.0, self.noise, size=a.shape)
        return np.clip(a, -1.0, 1.0)


def run_subtask_trials(
    subtask: str,
    *,
    episodes: int = 20,
    noise: float = 0.1,
    seed: int = 0,
    max_steps: int = 200,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """One subtask's controller alone, from the env's reset state, over ``episodes`` noisy episodes.

    Episode ``k`` resets FrankaKitchen-v1 (``tasks_to_complete=[subtask]``) with seed ``seed + k``
    and draws its action noise from ``numpy.random.default_rng([seed, k])``; it ends when the
    controller has finished or after ``max_steps`` steps. Success is the env's own verdict: the
    subtask is in ``info["episode_task_completions"]`` at the end (reached at some step).
    Returns ``{"subtask", "episodes", "noise", "seed", "successes", "success_rate",
    "held_at_end" (share still within the threshold at the end), "mean_steps" (controller steps
    per episode), "failed_episodes"}``; ``progress(k)`` is called after each episode.
    """
    import gymnasium as gym

    from ractd_cli.adapters import quiet_import

    gym.register_envs(quiet_import("gymnasium_robotics"))
    if subtask not in CONTROLLERS:
        raise ValueError(f"unknown subtask {subtask!r}; known: {list(CONTROLLERS)}")
    env = gym.make(
        "FrankaKitchen-v1", tasks_to_complete=[subtask], remove_task_when_completed=False,
        terminate_on_tasks_completed=False, max_episode_steps=max_steps, disable_env_checker=True,
    )
    successes, held, steps, failed = 0, 0, [], []
    try:
        for k in range(episodes):
            env.reset(seed=seed + k)
            policy = ScriptedPolicy(env, [subtask], noise=noise, rng=np.random.default_rng([seed, k]))
            info: dict[str, Any] = {}
            for _ in range(max_steps):
                _, _, terminated, truncated, info = env.step(policy())
                if policy.finished or terminated or truncated:
                    break
            ok = subtask in info.get("episode_task_completions", ())
            successes += ok
            if not ok:
                failed.append(k)
            held += bool(np.linalg.norm(policy.arm.data.qpos[_env_constants()[0][subtask]] - _env_constants()[1][subtask])
                         < _env_constants()[2])
            steps.append(policy.outcomes[0][2] if policy.outcomes else max_steps)
            if progress is not None:
                progress(k + 1)
    finally:
        env.close()
    return {
        "subtask": subtask,
        "episodes": int(episodes),
        "noise": float(noise),
        "seed": int(seed),
        "successes": int(successes),
        "success_rate": successes / max(episodes, 1),
        "held_at_end": held / max(episodes, 1),
        "mean_steps": float(np.mean(steps)) if steps else 0.0,
        "failed_episodes": failed,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ractd_kitchen.scripted [SUBTASK ...] [--episodes N] [--noise S] [--seed K] [--json]``:
    each controller's success rate alone (:func:`run_subtask_trials`); every subtask by default."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m ractd_kitchen.scripted", description=main.__doc__)
    p.add_argument("subtasks", nargs="*", default=list(SUBTASKS), help=f"subtasks (default: all of {', '.join(SUBTASKS)})")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--noise", type=float, default=0.1, help="action noise std (default 0.1, the generator's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = p.parse_args(argv)
    rows = []
    for t in args.subtasks:
        r = run_subtask_trials(t, episodes=args.episodes, noise=args.noise, seed=args.seed, max_steps=args.max_steps)
        rows.append(r)
        if not args.json:
            print(f"{t:14s} success {r['successes']}/{r['episodes']} = {100 * r['success_rate']:5.1f}%  "
                  f"still done at the end {100 * r['held_at_end']:5.1f}%  mean steps {r['mean_steps']:.1f}"
                  + (f"  failed episodes {r['failed_episodes']}" if r["failed_episodes"] else ""), file=sys.stdout, flush=True)
    if args.json:
        print(json.dumps({"noise": args.noise, "seed": args.seed, "episodes": args.episodes, "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
